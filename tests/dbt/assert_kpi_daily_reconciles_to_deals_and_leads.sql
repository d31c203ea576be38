-- Every event lands on exactly one day of kpi_daily, and the open pipeline on the day of the last sync is the
-- deals open now. Returns one row per metric whose kpi_daily figure disagrees with the same figure counted
-- another way: leads and deals from every version the syncs kept, closes from the deals' history, the open
-- pipeline from the deals mart (the live records, not their history).
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

counted as (

    select 'leads_created' as metric, count(distinct lead_id) as counted_value
    from {{ ref('stg_zoho__lead_versions') }}
    union all
    select 'leads_converted' as metric, count(distinct lead_id) as counted_value
    from {{ ref('stg_zoho__lead_versions') }}
    where converted_date is not null
    union all
    select 'deals_created' as metric, count(distinct deal_id) as counted_value
    from {{ ref('stg_zoho__deal_versions') }}
    union all
    select 'deals_won' as metric, count(*) as counted_value
    from {{ ref('int_deal_closings') }} where outcome = 'won'
    union all
    select 'deals_lost' as metric, count(*) as counted_value
    from {{ ref('int_deal_closings') }} where outcome = 'lost'
    union all
    select 'open_pipeline_count' as metric, count(*) as counted_value
    from deals
    where status = 'open'

),

kpi_values as (

    select * from summed_over_days
    union all
    select * from on_checked_day

)

select
    counted.metric,
    kpi_values.kpi_value,
    counted.counted_value

from counted
left join kpi_values
    on counted.metric = kpi_values.metric
where coalesce(kpi_values.kpi_value, 0) <> counted.counted_value
