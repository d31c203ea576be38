with

visits as (

    select * from {{ ref('deal_stage_durations') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

-- Open stages only: a deal "moves on" when its next stage lies further down the pipeline or is won. A deal may
-- visit a stage more than once; it counts once per stage, so each deal's visits of a stage are folded first (one
-- grouping instead of four distinct counts: 0.8 s -> 0.45 s at a million deals on DuckDB).
by_deal_and_stage as (

    select
        pipeline,
        stage,
        deal_id,
        min(stage_order) as stage_order,
        max(case when next_status = 'won' or next_stage_order > stage_order then 1 else 0 end) as moved_on,
        max(case when next_status = 'lost' then 1 else 0 end) as lost_from_stage,
        max(case when left_date is null then 1 else 0 end) as still_in_stage,
        sum(days_in_stage) as days_in_stage,
        count(days_in_stage) as visits_ended

    from visits
    where status = 'open'
    group by pipeline, stage, deal_id

),

by_stage as (

    select
        pipeline,
        stage,
        min(stage_order) as stage_order,
        count(*) as deals_entered,
        sum(moved_on) as deals_moved_on,
        sum(lost_from_stage) as deals_lost_from_stage,
        sum(still_in_stage) as deals_still_in_stage,
        sum(days_in_stage) as days_in_stage,
        sum(visits_ended) as visits_ended

    from by_deal_and_stage
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
