with

daily as (

    select * from {{ ref('owner_performance_daily') }}

),

months as (

    select
        *,
        cast({{ dbt.date_trunc('month', 'activity_date') }} as date) as month_start

    from daily

),

month_ends as (

    select
        month_start,
        max(activity_date) as last_day

    from months
    group by month_start

),

summed as (

    select
        months.month_start,
        months.owner_id,
        max(months.owner_name) as owner_name,
        sum(months.deals_created) as deals_created,
        sum(months.deals_created_amount) as deals_created_amount,
        sum(months.deals_won) as deals_won,
        sum(months.deals_won_amount) as deals_won_amount,
        sum(months.deals_lost) as deals_lost,
        sum(months.deals_lost_amount) as deals_lost_amount,
        -- The open pipeline is a state: the month's is that of its last day (so far).
        sum(case when months.activity_date = month_ends.last_day then months.open_pipeline_count else 0 end)
            as open_pipeline_count,
        sum(case when months.activity_date = month_ends.last_day then months.open_pipeline_amount else 0 end)
            as open_pipeline_amount,
        max(months.home_currency_code) as home_currency_code,
        min(case when months.is_complete then 1 else 0 end) = 1 as is_complete

    from months
    inner join month_ends
        on months.month_start = month_ends.month_start
    group by months.month_start, months.owner_id

),

final as (

    select
        {{ dbt.concat(['cast(month_start as ' ~ dbt.type_string() ~ ')', "'-'", "coalesce(owner_id, 'none')"]) }}
            as owner_month_id,
        month_start,
        owner_id,
        owner_name,
        cast(deals_created as {{ dbt.type_bigint() }}) as deals_created,
        cast(deals_created_amount as {{ dbt.type_numeric() }}) as deals_created_amount,
        cast(deals_won as {{ dbt.type_bigint() }}) as deals_won,
        cast(deals_won_amount as {{ dbt.type_numeric() }}) as deals_won_amount,
        cast(deals_lost as {{ dbt.type_bigint() }}) as deals_lost,
        cast(deals_lost_amount as {{ dbt.type_numeric() }}) as deals_lost_amount,
        {{ divide('deals_won', 'deals_won + deals_lost') }} as win_rate,
        cast(open_pipeline_count as {{ dbt.type_bigint() }}) as open_pipeline_count,
        cast(open_pipeline_amount as {{ dbt.type_numeric() }}) as open_pipeline_amount,
        home_currency_code,
        is_complete

    from summed

)

select * from final
