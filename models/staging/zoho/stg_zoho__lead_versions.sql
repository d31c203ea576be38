with

source as (

    {{ zoho_source_or_empty('lead_versions') }}

),

renamed as (

    select

{{ zoho_lead_fields() }}

    from source

)

select * from renamed
