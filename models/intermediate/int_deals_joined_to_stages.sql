{#- A table, not a view: its tests and int_deals_in_home_currency read it, and as a view each of them sifted the
    live deals out of the raw table and matched their stages again. -#}
{{ config(materialized="table") }}

with

deals as (

    select * from {{ ref('stg_zoho__deals') }}

),

stages as (

    select * from {{ ref('stg_zoho__deal_stages') }}

),

stages_by_name as (

    select * from {{ ref('int_stages_by_name') }}

),

-- A deal whose (pipeline, stage) the layout does not list takes the stage of that name (int_stages_by_name).
matched as (

    select
        deals.*,
        coalesce(same_pipeline.stage_id, same_name.stage_id) as matched_stage_id

    from deals
    left join stages as same_pipeline
        on deals.pipeline = same_pipeline.pipeline
        and deals.stage = same_pipeline.stage
    left join stages_by_name as same_name
        on deals.stage = same_name.stage

),

joined as (

    select
        matched.deal_id,
        matched.deal_name,
        matched.account_id,
        matched.account_name,
        matched.owner_id,
        matched.owner_name,
        -- Without pipelines Zoho leaves Pipeline empty: the deal runs in the pipeline whose stage it matched.
        coalesce(matched.pipeline, stages.pipeline) as pipeline,
        matched.stage,
        stages.stage_order,
        stages.forecast_type,
        matched.currency,
        matched.amount,
        matched.exchange_rate,
        matched.probability,
        matched.lead_source,
        matched.created_at,
        matched.created_date,
        matched.closing_date,
        matched.modified_at,
        {{ to_org_date('matched.modified_at') }} as modified_date

    from matched
    left join stages
        on matched.matched_stage_id = stages.stage_id

),

classified as (

    select
        *,
        {{ deal_status('forecast_type') }} as status

    from joined

),

final as (

    select
        deal_id,
        deal_name,
        account_id,
        account_name,
        owner_id,
        owner_name,
        pipeline,
        stage,
        stage_order,
        forecast_type,
        status,
        status <> 'open' as is_closed,
        status = 'won' as is_won,
        currency,
        amount,
        exchange_rate,
        probability,
        lead_source,
        created_at,
        created_date,
        closing_date,
        -- Zoho's Closing_Date is the *expected* close day: nobody has to update it when marking a deal won or
        -- lost, so it may be stale or still in the future. The deal cannot have closed after its last change
        -- nor before it was created, so a closed deal closed on its Closing_Date when that lies between the
        -- two, and otherwise on the day of its last change. A Closing_Date outside the deal's life (1900,
        -- 2999) therefore never moves a close, and never stretches kpi_daily's calendar.
        case
            when status = 'open' then null
            when closing_date between created_date and modified_date then closing_date
            else modified_date
        end as closed_date,
        modified_at

    from classified

)

select * from final
