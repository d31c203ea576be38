with

stages as (

    select * from {{ ref('stg_zoho__deal_stages') }}

),

deals as (

    select * from {{ ref('int_deals_in_home_currency') }}

),

layout_stages as (

    select
        pipeline,
        stage,
        stage_order,
        forecast_type

    from stages

),

-- Deals can sit in a (pipeline, stage) the pipeline layout does not list: a stage it no longer lists (open),
-- or a pipeline it does not know whose stage was matched by name (see int_deals_joined_to_stages). They get
-- rows too, so the open totals here always add up to the open deals in `deals`.
unlisted_stages as (

    select distinct
        deals.pipeline,
        deals.stage,
        deals.stage_order,
        deals.forecast_type

    from deals
    where not exists (
        select 1
        from layout_stages
        where {{ null_safe_equals('layout_stages.pipeline', 'deals.pipeline') }}
            and {{ null_safe_equals('layout_stages.stage', 'deals.stage') }}
    )

),

all_stages as (

    select * from layout_stages
    union all
    select * from unlisted_stages

),

open_deals_by_stage as (

    select
        pipeline,
        stage,
        count(*) as open_deals,
        sum(coalesce(amount, 0)) as open_amount,
        sum(coalesce(weighted_amount, 0)) as weighted_amount

    from deals
    where status = 'open'
    group by pipeline, stage

),

context as (

    select * from {{ ref('int_sync_context') }}

),

final as (

    select
        all_stages.pipeline,
        all_stages.stage,
        all_stages.stage_order,
        all_stages.forecast_type,
        cast(coalesce(open_deals_by_stage.open_deals, 0) as {{ dbt.type_bigint() }}) as open_deals,
        cast(coalesce(open_deals_by_stage.open_amount, 0) as {{ dbt.type_numeric() }}) as open_amount,
        cast(coalesce(open_deals_by_stage.weighted_amount, 0) as {{ dbt.type_numeric() }}) as weighted_amount,
        context.home_currency_code

    from all_stages
    cross join context
    left join open_deals_by_stage
        on {{ null_safe_equals('all_stages.pipeline', 'open_deals_by_stage.pipeline') }}
        and {{ null_safe_equals('all_stages.stage', 'open_deals_by_stage.stage') }}

)

select * from final
