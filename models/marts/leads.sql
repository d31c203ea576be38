with

leads as (

    select * from {{ ref('stg_zoho__leads') }}

),

final as (

    select
        lead_id,
        full_name,
        company,
        owner_id,
        owner_name,
        lead_source,
        lead_status,
        created_at,
        created_date,
        is_converted,
        converted_at,
        converted_date,
        converted_deal_id,
        cast({{ dbt.datediff('created_date', 'converted_date', 'day') }} as {{ dbt.type_int() }}) as days_to_convert,
        modified_at

    from leads

)

select * from final
