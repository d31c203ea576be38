with

source as (

    {{ zoho_live_records('leads', module='Leads') }}

),

renamed as (

    select

{{ zoho_lead_fields() }},

        ----------  the sync that last wrote this lead: dlt's load id
        cast(_dlt_load_id as {{ dbt.type_string() }}) as load_id

    from source

)

select * from renamed
