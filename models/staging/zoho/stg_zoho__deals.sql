with

source as (

    {{ zoho_live_records('deals', module='Deals') }}

),

renamed as (

    select

{{ zoho_deal_fields() }},

        ----------  the sync that last wrote this deal: dlt's load id
        cast(_dlt_load_id as {{ dbt.type_string() }}) as load_id

    from source

)

select * from renamed
