with

source as (

    {{ zoho_live_records('leads', module='Leads') }}

),

renamed as (

    select

{{ zoho_lead_fields() }}

    from source

)

select * from renamed
