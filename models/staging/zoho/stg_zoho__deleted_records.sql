with

source as (

    select * from {{ source('zoho', 'deleted_records') }}

),

renamed as (

    select

        ----------  ids
        cast(module as {{ dbt.type_string() }}) as module,
        cast(id as {{ dbt.type_string() }}) as record_id,
        cast(deleted_by__id as {{ dbt.type_string() }}) as deleted_by_id,
        cast(_dlt_load_id as {{ dbt.type_string() }}) as load_id,

        ----------  text
        cast(type as {{ dbt.type_string() }}) as deletion_type,
        cast(display_name as {{ dbt.type_string() }}) as display_name,
        cast(deleted_by__name as {{ dbt.type_string() }}) as deleted_by_name,

        ----------  timestamps
        cast(deleted_time as {{ type_timestamptz() }}) as deleted_at

    from source

)

select * from renamed
