{#- A table, not a view: int_kpis_by_day, owner_performance_daily and sales_summary_by_period roll it up, and as a
    view each of them would add up every deal's history and closes again in every build. -#}
{{ config(materialized="table") }}

with

history as (

    select * from {{ ref('int_deal_history') }}

),

closings as (

    select * from {{ ref('int_deal_closings') }}

),

-- A deal counts for the owner it had at the moment. Created: on the day it was created, for its first owner, at
-- what it was worth when first known (every deal a sync has seen, deleted ones included).
created as (

    select
        created_date as activity_date,
        owner_id,
        cast('created' as {{ dbt.type_string() }}) as event,
        amount,
        cast(null as {{ dbt.type_bigint() }}) as days_to_close

    from history
    where change_number = 1

),

-- Won or lost: on the day it entered a won or lost stage, for its owner and at its amount then (a deal reopened
-- and closed again closes twice).
closed as (

    select
        closed_date as activity_date,
        owner_id,
        outcome as event,
        amount,
        cast({{ dbt.datediff('created_date', 'closed_date', 'day') }} as {{ dbt.type_bigint() }}) as days_to_close

    from closings

),

events as (

    select * from created
    union all
    select * from closed

),

summed as (

    select
        activity_date,
        owner_id,
        sum(case when event = 'created' then 1 else 0 end) as deals_created,
        sum(case when event = 'created' then coalesce(amount, 0) else 0 end) as deals_created_amount,
        sum(case when event = 'won' then 1 else 0 end) as deals_won,
        sum(case when event = 'won' then coalesce(amount, 0) else 0 end) as deals_won_amount,
        count(case when event = 'won' then amount end) as deals_won_with_amount,
        max(case when event = 'won' then amount end) as largest_deal_won_amount,
        sum(case when event = 'won' then days_to_close end) as deals_won_days_to_close,
        sum(case when event = 'lost' then 1 else 0 end) as deals_lost,
        sum(case when event = 'lost' then coalesce(amount, 0) else 0 end) as deals_lost_amount

    from events
    group by activity_date, owner_id

),

final as (

    select
        activity_date,
        owner_id,
        cast(deals_created as {{ dbt.type_bigint() }}) as deals_created,
        cast(deals_created_amount as {{ dbt.type_numeric() }}) as deals_created_amount,
        cast(deals_won as {{ dbt.type_bigint() }}) as deals_won,
        cast(deals_won_amount as {{ dbt.type_numeric() }}) as deals_won_amount,
        cast(deals_won_with_amount as {{ dbt.type_bigint() }}) as deals_won_with_amount,
        cast(largest_deal_won_amount as {{ dbt.type_numeric() }}) as largest_deal_won_amount,
        cast(deals_won_days_to_close as {{ dbt.type_bigint() }}) as deals_won_days_to_close,
        cast(deals_lost as {{ dbt.type_bigint() }}) as deals_lost,
        cast(deals_lost_amount as {{ dbt.type_numeric() }}) as deals_lost_amount

    from summed

)

select * from final
