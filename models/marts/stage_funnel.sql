with

visits as (

    select * from {{ ref('deal_stage_durations') }}

),

-- The live deals: a deleted deal leaves the funnel with its record, as it leaves the deals mart.
deals as (

    select * from {{ ref('deals') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

live_visits as (

    select visits.*

    from visits
    inner join deals
        on visits.deal_id = deals.deal_id

),

-- What each visit was followed by: whether the deal was won at a later visit, the furthest open stage it
-- reached after it, and where the deal stands now (its last visit). Zoho sorts its lost stages after every
-- open stage, so a stage order alone cannot tell moving on from being lost: the status does.
looking_ahead as (

    select
        live_visits.*,
        max(case when status = 'won' then 1 else 0 end) over (
            partition by deal_id order by visit_number rows between 1 following and unbounded following
        ) as is_won_later,
        max(case when status = 'open' then stage_order end) over (
            partition by deal_id order by visit_number rows between 1 following and unbounded following
        ) as furthest_open_stage_order_later,
        last_value(status) over (
            partition by deal_id order by visit_number rows between unbounded preceding and unbounded following
        ) as current_status

    from live_visits

),

-- One row per deal and open stage of the layout it entered, however often it came back: a stage that no
-- pipeline lists has no place in a funnel (its stage_order is null; data_quality_issues lists the deal as
-- stage_in_no_pipeline). What followed the deal's first entry covers what followed every later one, so the
-- largest look-ahead of its visits is that of the first.
by_deal_and_stage as (

    select
        pipeline,
        stage,
        deal_id,
        min(stage_order) as stage_order,
        max(is_won_later) as is_won_later,
        max(furthest_open_stage_order_later) as furthest_open_stage_order_later,
        min(current_status) as current_status,
        sum(days_in_stage) as days_in_stage,
        count(days_in_stage) as visits_ended

    from looking_ahead
    where status = 'open'
        and stage_order is not null
    group by pipeline, stage, deal_id

),

-- Exactly one outcome per deal and stage, so moved on + lost + still in = entered: it moved on when, after
-- entering the stage, it reached a stage further down the pipeline or was won; otherwise it was lost when it
-- is lost now, and is still in the stage when it is open now (in it, or back in an earlier stage).
outcomes as (

    select
        *,
        case
            when is_won_later = 1 or furthest_open_stage_order_later > stage_order then 'moved_on'
            when current_status = 'lost' then 'lost'
            else 'still_in'
        end as outcome

    from by_deal_and_stage

),

by_stage as (

    select
        pipeline,
        stage,
        min(stage_order) as stage_order,
        count(*) as deals_entered,
        sum(case when outcome = 'moved_on' then 1 else 0 end) as deals_moved_on,
        sum(case when outcome = 'lost' then 1 else 0 end) as deals_lost_from_stage,
        sum(case when outcome = 'still_in' then 1 else 0 end) as deals_still_in_stage,
        sum(days_in_stage) as days_in_stage,
        sum(visits_ended) as visits_ended

    from outcomes
    group by pipeline, stage

),

final as (

    select
        {{ dbt.concat(["coalesce(pipeline, '')", "'-'", 'stage']) }} as funnel_stage_id,
        pipeline,
        stage,
        stage_order,
        cast(deals_entered as {{ dbt.type_bigint() }}) as deals_entered,
        cast(deals_moved_on as {{ dbt.type_bigint() }}) as deals_moved_on,
        cast(deals_lost_from_stage as {{ dbt.type_bigint() }}) as deals_lost_from_stage,
        cast(deals_still_in_stage as {{ dbt.type_bigint() }}) as deals_still_in_stage,
        {{ divide('deals_moved_on', 'deals_entered') }} as stage_conversion_rate,
        {{ divide('days_in_stage', 'visits_ended') }} as average_days_in_stage,
        context.as_of_date

    from by_stage
    cross join context

)

select * from final
