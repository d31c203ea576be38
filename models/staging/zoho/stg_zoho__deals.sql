with

source as (

    {{ zoho_live_records('deals', module='Deals') }}

),

renamed as (

    select

{{ zoho_deal_fields() }}

    from source

)

select * from renamed
