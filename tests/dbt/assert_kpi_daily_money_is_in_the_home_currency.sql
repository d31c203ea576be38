-- Every amount in kpi_daily is in the org's home currency and says so: its unit is the home currency's code.
-- Returns the metrics whose unit is neither count, ratio nor that code.

with

kpis as (

    select * from {{ ref('kpi_daily') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

)

select distinct
    kpis.metric,
    kpis.unit

from kpis
cross join context
where (kpis.metric like '%amount' and kpis.unit <> context.home_currency_code)
    or (kpis.metric not like '%amount' and kpis.unit not in ('count', 'ratio'))
