with

source as (

    {{ zoho_source_or_empty('deal_versions') }}

),

renamed as (

    select

{{ zoho_deal_fields() }}

    from source

)

select * from renamed
