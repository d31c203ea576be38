-- Every event lands on exactly one day of kpi_daily, and today's open pipeline is the deals open now.
-- Returns one row per metric whose kpi_daily figure disagrees with the same figure counted from the marts.
--
-- The open pipeline is checked on the day of the last sync (org timezone), which must be kpi_daily's last
-- day: a calendar stretched into the future by a close dated after it would agree with the open deals on its
-- last day while counting a deal already won or lost as open on the day of the sync.

with

kpis as (

    select * from {{ ref('kpi_daily') }}

),

deals as (

    select * from {{ ref('deals') }}

),

leads as (

    select * from {{ ref('leads') }}

),

summed_over_days as (

    select
        metric,
        sum(value) as kpi_value

    from kpis
    where metric in ('leads_created', 'leads_converted', 'deals_created', 'deals_won', 'deals_lost')
    group by metric

),

checked_day as (

    select as_of_date as kpi_date
    from {{ ref('int_sync_context') }}

),

on_checked_day as (

    select
        metric,
        value as kpi_value

    from kpis
    where metric = 'open_pipeline_count'
        and kpi_date = (select kpi_date from checked_day)

),

from_marts as (

    select 'leads_created' as metric, count(*) as mart_value from leads
    union all
    select 'leads_converted' as metric, count(converted_date) as mart_value from leads
    union all
    select 'deals_created' as metric, count(*) as mart_value from deals
    union all
    select 'deals_won' as metric, count(closed_date) as mart_value from deals where status = 'won'
    union all
    select 'deals_lost' as metric, count(closed_date) as mart_value from deals where status = 'lost'
    union all
    -- open at the end of the checked day: every deal was created by then
    select 'open_pipeline_count' as metric, count(*) as mart_value
    from deals
    where status = 'open'
        and created_date <= (select kpi_date from checked_day)

),

kpi_values as (

    select * from summed_over_days
    union all
    select * from on_checked_day

)

select
    from_marts.metric,
    kpi_values.kpi_value,
    from_marts.mart_value

from from_marts
left join kpi_values
    on from_marts.metric = kpi_values.metric
where coalesce(kpi_values.kpi_value, 0) <> from_marts.mart_value
