with

source as (

    select * from {{ source('zoho', '_dlt_loads') }}

),

renamed as (

    select

        ----------  ids
        cast(load_id as {{ dbt.type_string() }}) as load_id,

        ----------  numerics: 0 once the load committed
        cast(status as {{ dbt.type_int() }}) as status,

        ----------  booleans
        cast(status as {{ dbt.type_int() }}) = 0 as is_committed,

        ----------  timestamps
        cast(inserted_at as {{ type_timestamptz() }}) as loaded_at

    from source

)

select * from renamed
