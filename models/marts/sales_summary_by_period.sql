{#- The sales snapshot per calendar month and quarter (in the spirit of Fivetran's salesforce__sales_snapshot,
    but one row per period instead of one for "now"). -#}
{%- set grains = ['month', 'quarter'] -%}

with

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

deal_activity as (

    select * from {{ ref('int_deal_activity_by_owner_day') }}

),

kpis_by_day as (

    select * from {{ ref('int_kpis_by_day') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

periods as (

    {% for grain in grains %}
    select
        cast('{{ grain }}' as {{ dbt.type_string() }}) as period_type,
        cast({{ dbt.date_trunc(grain, 'calendar_date') }} as date) as period_start,
        min(calendar_date) as first_day,
        max(calendar_date) as last_day

    from calendar
    group by cast({{ dbt.date_trunc(grain, 'calendar_date') }} as date)
    {% if not loop.last %}
    union all
    {% endif %}
    {%- endfor %}

),

-- The closes of each period, added up over its days and owners.
closes_by_period as (

    {% for grain in grains %}
    select
        cast('{{ grain }}' as {{ dbt.type_string() }}) as period_type,
        cast({{ dbt.date_trunc(grain, 'activity_date') }} as date) as period_start,
        sum(deals_won) as deals_won,
        sum(deals_lost) as deals_lost,
        sum(deals_won_amount) as bookings_amount,
        sum(deals_won_with_amount) as won_deals_with_amount,
        max(largest_deal_won_amount) as largest_deal_amount,
        sum(deals_won_days_to_close) as won_days_to_close

    from deal_activity
    group by cast({{ dbt.date_trunc(grain, 'activity_date') }} as date)
    {% if not loop.last %}
    union all
    {% endif %}
    {%- endfor %}

),

final as (

    select
        {{ dbt.concat(['periods.period_type', "'-'", 'cast(periods.period_start as ' ~ dbt.type_string() ~ ')']) }}
            as period_id,
        periods.period_type,
        periods.period_start,
        periods.last_day as period_last_day,
        cast(coalesce(closes_by_period.deals_won, 0) as {{ dbt.type_bigint() }}) as deals_won,
        cast(coalesce(closes_by_period.deals_lost, 0) as {{ dbt.type_bigint() }}) as deals_lost,
        {{ divide('coalesce(closes_by_period.deals_won, 0)',
                  'coalesce(closes_by_period.deals_won, 0) + coalesce(closes_by_period.deals_lost, 0)') }}
            as win_rate,
        cast(coalesce(closes_by_period.bookings_amount, 0) as {{ dbt.type_numeric() }}) as bookings_amount,
        {{ divide('closes_by_period.bookings_amount', 'closes_by_period.won_deals_with_amount') }}
            as average_deal_size_amount,
        cast(closes_by_period.largest_deal_amount as {{ dbt.type_numeric() }}) as largest_deal_amount,
        {{ divide('closes_by_period.won_days_to_close', 'closes_by_period.deals_won') }} as average_days_to_close,
        end_state.open_pipeline_count as open_pipeline_count_at_end,
        end_state.open_pipeline_amount as open_pipeline_amount_at_end,
        context.home_currency_code,
        periods.last_day < context.as_of_date as is_complete

    from periods
    cross join context
    left join closes_by_period
        on periods.period_type = closes_by_period.period_type
        and periods.period_start = closes_by_period.period_start
    left join kpis_by_day as end_state
        on periods.last_day = end_state.kpi_date

)

select * from final
