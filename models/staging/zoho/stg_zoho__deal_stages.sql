with

source as (

    select * from {{ source('zoho', 'deal_stages') }}

),

renamed as (

    select

        ----------  ids
        cast(id as {{ dbt.type_string() }}) as stage_id,
        cast(pipeline_id as {{ dbt.type_string() }}) as pipeline_id,

        ----------  text: `stage` is the value deals carry, `stage_label` what the CRM displays
        cast(pipeline as {{ dbt.type_string() }}) as pipeline,
        cast(stage as {{ dbt.type_string() }}) as stage,
        cast(display_value as {{ dbt.type_string() }}) as stage_label,
        cast(forecast_type as {{ dbt.type_string() }}) as forecast_type,
        cast(forecast_category as {{ dbt.type_string() }}) as forecast_category,

        ----------  numerics: Zoho's stage probability is a percent, the marts use a fraction
        cast(sequence_number as {{ dbt.type_int() }}) as stage_order,
        {{ divide('probability', 100) }} as probability

    from source

)

select * from renamed
