with

deals as (

    select * from {{ ref('int_deals_joined_to_stages') }}

),

final as (

    select
        deal_id,
        deal_name,
        account_id,
        account_name,
        owner_id,
        owner_name,
        pipeline,
        stage,
        stage_order,
        forecast_type,
        status,
        is_closed,
        is_won,
        amount,
        probability,
        weighted_amount,
        lead_source,
        created_at,
        created_date,
        closing_date,
        closed_date,
        modified_at,
        cast(
            {{ dbt.datediff('created_date', 'coalesce(closed_date, ' ~ org_today() ~ ')', 'day') }}
            as {{ dbt.type_int() }}
        ) as days_open,
        cast({{ dbt.datediff('created_date', 'closed_date', 'day') }} as {{ dbt.type_int() }}) as days_to_close

    from deals

)

select * from final
