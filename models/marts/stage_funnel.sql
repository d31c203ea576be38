with

visits as (

    select * from {{ ref('deal_stage_durations') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

-- Open stages only: a deal "moves on" when its next stage lies further down the pipeline or is won.
by_stage as (

    select
        pipeline,
        stage,
        min(stage_order) as stage_order,
        count(distinct deal_id) as deals_entered,
        count(distinct case when next_status = 'won' or next_stage_order > stage_order then deal_id end)
            as deals_moved_on,
        count(distinct case when next_status = 'lost' then deal_id end) as deals_lost_from_stage,
        count(distinct case when left_date is null then deal_id end) as deals_still_in_stage,
        sum(days_in_stage) as days_in_stage,
        count(days_in_stage) as visits_ended

    from visits
    where status = 'open'
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
