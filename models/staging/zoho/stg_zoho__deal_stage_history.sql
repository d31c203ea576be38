with

source as (

    {{ zoho_source_or_empty('deal_stage_history') }}

),

renamed as (

    select

        ----------  ids
        cast(id as {{ dbt.type_string() }}) as stage_history_id,
        cast(deal_id as {{ dbt.type_string() }}) as deal_id,
        cast(modified_by__id as {{ dbt.type_string() }}) as changed_by_id,
        cast(_dlt_load_id as {{ dbt.type_string() }}) as load_id,

        ----------  text
        cast(stage as {{ dbt.type_string() }}) as stage,

        ----------  numerics: Zoho's Probability is a percent, the marts use a fraction
        cast(amount as {{ dbt.type_numeric() }}) as amount,
        {{ divide('probability', 100) }} as probability,

        ----------  dates
        cast(closing_date as date) as closing_date,

        ----------  timestamps
        cast(modified_time as {{ type_timestamptz() }}) as changed_at

    from source

)

select * from renamed
