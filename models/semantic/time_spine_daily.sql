with

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

-- MetricFlow's day spine: kpi_daily's days, so a metric asked for by day (or a coarser grain) runs over the
-- same calendar as the marts, from the org's first lead or deal to the day of the last sync. Each day says
-- whether it is over, as kpi_daily does: the calendar_days semantic model makes a period that holds the day
-- of the last sync a partial one (metric period_is_partial).
final as (

    select
        cast(calendar.calendar_date as date) as date_day,
        calendar.calendar_date < context.as_of_date as is_complete

    from calendar
    cross join context

)

select * from final
