with

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

-- MetricFlow's day spine: kpi_daily's days, so a metric asked for by day (or a coarser grain) runs over the
-- same calendar as the marts, from the org's first lead or deal to the day of the last sync.
final as (

    select cast(calendar_date as date) as date_day

    from calendar

)

select * from final
