with

deals as (

    select * from {{ ref('int_deals_in_home_currency') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

final as (

    select
        deals.deal_id,
        deals.deal_name,
        deals.account_id,
        deals.account_name,
        deals.owner_id,
        deals.owner_name,
        deals.pipeline,
        deals.stage,
        deals.stage_order,
        deals.forecast_type,
        deals.status,
        deals.is_closed,
        deals.is_won,
        deals.amount,
        deals.probability,
        deals.weighted_amount,
        deals.home_currency_code,
        deals.amount_in_currency,
        deals.currency_code,
        deals.exchange_rate,
        deals.lead_source,
        deals.created_at,
        deals.created_date,
        deals.closing_date,
        deals.closed_date,
        deals.modified_at,
        cast(
            {{ dbt.datediff('deals.created_date', 'coalesce(deals.closed_date, context.as_of_date)', 'day') }}
            as {{ dbt.type_int() }}
        ) as days_open,
        cast({{ dbt.datediff('deals.created_date', 'deals.closed_date', 'day') }} as {{ dbt.type_int() }})
            as days_to_close

    from deals
    cross join context

)

select * from final
