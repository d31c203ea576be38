{#- A table, not a view: several marts and tests read it, and as a view each of them worked it out again in every build. -#}
{{ config(materialized="table") }}

with

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

deal_activity as (

    select * from {{ ref('int_deal_activity_by_owner_day') }}

),

open_by_owner as (

    select * from {{ ref('int_open_pipeline_by_owner_day') }}

),

-- Every lead a sync has seen, deleted ones included: a lead that arrived on d counts on d for good.
leads_seen as (

    select * from {{ ref('int_leads_seen') }}

),

leads_created as (

    select
        created_date as kpi_date,
        count(*) as leads_created

    from leads_seen
    group by created_date

),

leads_converted as (

    select
        converted_date as kpi_date,
        count(*) as leads_converted

    from leads_seen
    where converted_date is not null
    group by converted_date

),

-- The deals created, won and lost that day, added up over their owners.
deals_by_day as (

    select
        activity_date as kpi_date,
        sum(deals_created) as deals_created,
        sum(deals_created_amount) as deals_created_amount,
        sum(deals_won) as deals_won,
        sum(deals_won_amount) as deals_won_amount,
        sum(deals_lost) as deals_lost,
        sum(deals_lost_amount) as deals_lost_amount

    from deal_activity
    group by activity_date

),

open_pipeline as (

    select
        calendar_date as kpi_date,
        cast(sum(open_pipeline_count) as {{ dbt.type_bigint() }}) as open_pipeline_count,
        sum(open_pipeline_amount) as open_pipeline_amount,
        sum(open_pipeline_weighted_amount) as open_pipeline_weighted_amount

    from open_by_owner
    group by calendar_date

),

joined as (

    select
        calendar.calendar_date as kpi_date,
        coalesce(leads_created.leads_created, 0) as leads_created,
        coalesce(leads_converted.leads_converted, 0) as leads_converted,
        coalesce(deals_by_day.deals_created, 0) as deals_created,
        coalesce(deals_by_day.deals_created_amount, 0) as deals_created_amount,
        coalesce(deals_by_day.deals_won, 0) as deals_won,
        coalesce(deals_by_day.deals_won_amount, 0) as deals_won_amount,
        coalesce(deals_by_day.deals_lost, 0) as deals_lost,
        coalesce(deals_by_day.deals_lost_amount, 0) as deals_lost_amount,
        coalesce(open_pipeline.open_pipeline_count, 0) as open_pipeline_count,
        coalesce(open_pipeline.open_pipeline_amount, 0) as open_pipeline_amount,
        coalesce(open_pipeline.open_pipeline_weighted_amount, 0) as open_pipeline_weighted_amount

    from calendar
    left join leads_created
        on calendar.calendar_date = leads_created.kpi_date
    left join leads_converted
        on calendar.calendar_date = leads_converted.kpi_date
    left join deals_by_day
        on calendar.calendar_date = deals_by_day.kpi_date
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
        {{ divide(
            'sum(deals_won) over (order by kpi_date rows between 29 preceding and current row)',
            'sum(deals_won + deals_lost) over (order by kpi_date rows between 29 preceding and current row)'
        ) }} as win_rate_30d

    from joined

)

select * from final
