with

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

deals as (

    select * from {{ ref('int_deals_in_home_currency') }}

),

leads as (

    select * from {{ ref('stg_zoho__leads') }}

),

leads_created as (

    select
        created_date as kpi_date,
        count(*) as leads_created

    from leads
    group by created_date

),

leads_converted as (

    select
        converted_date as kpi_date,
        count(*) as leads_converted

    from leads
    where converted_date is not null
    group by converted_date

),

deals_created as (

    select
        created_date as kpi_date,
        count(*) as deals_created,
        sum(coalesce(amount, 0)) as deals_created_amount

    from deals
    group by created_date

),

deals_closed as (

    select
        closed_date as kpi_date,
        sum(case when status = 'won' then 1 else 0 end) as deals_won,
        sum(case when status = 'won' then coalesce(amount, 0) else 0 end) as deals_won_amount,
        sum(case when status = 'lost' then 1 else 0 end) as deals_lost,
        sum(case when status = 'lost' then coalesce(amount, 0) else 0 end) as deals_lost_amount

    from deals
    where closed_date is not null
    group by closed_date

),

-- A deal is open at the end of day d if it was created by d and is still open or closed after d. Rather than
-- join every day to every deal, the pipeline is a running total of changes: a deal joins it on the day it is
-- created and leaves it on the day it closes (a deal closed on the day it was created, or with no usable close
-- day, is never open); int_calendar_days covers every such day. Closed deals keep their current amount and
-- probability, so one that closed later counts at its outcome (won 1, lost 0).
pipeline_changes as (

    select
        created_date as change_date,
        1 as open_count_change,
        coalesce(amount, 0) as open_amount_change,
        coalesce(weighted_amount, 0) as open_weighted_amount_change

    from deals

    union all

    select
        case when closed_date > created_date then closed_date else created_date end as change_date,
        -1 as open_count_change,
        -coalesce(amount, 0) as open_amount_change,
        -coalesce(weighted_amount, 0) as open_weighted_amount_change

    from deals
    where status <> 'open'

),

pipeline_changes_by_day as (

    select
        change_date,
        sum(open_count_change) as open_count_change,
        sum(open_amount_change) as open_amount_change,
        sum(open_weighted_amount_change) as open_weighted_amount_change

    from pipeline_changes
    group by change_date

),

open_pipeline as (

    select
        calendar.calendar_date as kpi_date,
        sum(coalesce(pipeline_changes_by_day.open_count_change, 0)) over running_total as open_pipeline_count,
        sum(coalesce(pipeline_changes_by_day.open_amount_change, 0)) over running_total as open_pipeline_amount,
        sum(coalesce(pipeline_changes_by_day.open_weighted_amount_change, 0)) over running_total
            as open_pipeline_weighted_amount

    from calendar
    left join pipeline_changes_by_day
        on calendar.calendar_date = pipeline_changes_by_day.change_date
    window running_total as (order by calendar.calendar_date rows between unbounded preceding and current row)

),

joined as (

    select
        calendar.calendar_date as kpi_date,
        coalesce(leads_created.leads_created, 0) as leads_created,
        coalesce(leads_converted.leads_converted, 0) as leads_converted,
        coalesce(deals_created.deals_created, 0) as deals_created,
        coalesce(deals_created.deals_created_amount, 0) as deals_created_amount,
        coalesce(deals_closed.deals_won, 0) as deals_won,
        coalesce(deals_closed.deals_won_amount, 0) as deals_won_amount,
        coalesce(deals_closed.deals_lost, 0) as deals_lost,
        coalesce(deals_closed.deals_lost_amount, 0) as deals_lost_amount,
        open_pipeline.open_pipeline_count,
        open_pipeline.open_pipeline_amount,
        open_pipeline.open_pipeline_weighted_amount

    from calendar
    left join leads_created
        on calendar.calendar_date = leads_created.kpi_date
    left join leads_converted
        on calendar.calendar_date = leads_converted.kpi_date
    left join deals_created
        on calendar.calendar_date = deals_created.kpi_date
    left join deals_closed
        on calendar.calendar_date = deals_closed.kpi_date
    left join open_pipeline
        on calendar.calendar_date = open_pipeline.kpi_date

),

final as (

    select
        kpi_date,
        cast(leads_created as {{ dbt.type_bigint() }}) as leads_created,
        cast(leads_converted as {{ dbt.type_bigint() }}) as leads_converted,
        cast(deals_created as {{ dbt.type_bigint() }}) as deals_created,
        cast(deals_created_amount as {{ dbt.type_numeric() }}) as deals_created_amount,
        cast(deals_won as {{ dbt.type_bigint() }}) as deals_won,
        cast(deals_won_amount as {{ dbt.type_numeric() }}) as deals_won_amount,
        cast(deals_lost as {{ dbt.type_bigint() }}) as deals_lost,
        cast(deals_lost_amount as {{ dbt.type_numeric() }}) as deals_lost_amount,
        cast(open_pipeline_count as {{ dbt.type_bigint() }}) as open_pipeline_count,
        cast(open_pipeline_amount as {{ dbt.type_numeric() }}) as open_pipeline_amount,
        cast(open_pipeline_weighted_amount as {{ dbt.type_numeric() }}) as open_pipeline_weighted_amount,
        {{ divide('deals_won', 'deals_won + deals_lost') }} as win_rate,
        {{ divide('sum(deals_won) over last_30_days', 'sum(deals_won + deals_lost) over last_30_days') }}
            as win_rate_30d

    from joined
    -- The calendar has every day, so the 30 rows ending at d are the 30 days ending at d.
    window last_30_days as (order by kpi_date rows between 29 preceding and current row)

)

select * from final
