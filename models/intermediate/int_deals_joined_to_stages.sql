{#-
    Kept deal by deal (macros/kept_by_record.sql), like the leads mart: a build rewrites the deals that a sync
    committed since the last build wrote or deleted, and every deal when the stage layout or the time zone
    changed; the other deals' rows stay as they are. Stored, not a view: its tests, int_deals_in_home_currency
    and int_calendar_days read it.
-#}
{{ config(**kept_by_record_config('deal_id', pre_hook=[
    "{{ empty_when_definitions_changed(ref('stg_zoho__deal_stages')) }}",
    "{{ delete_records_deleted_since_last_build('Deals', 'deal_id') }}",
])) }}

-- depends_on: {{ ref('stg_zoho__loads') }}, {{ ref('stg_zoho__deleted_records') }}
{%- set build = kept_by_record_build(definitions_fingerprint(ref('stg_zoho__deal_stages'))) %}

with

context as (

    select * from {{ ref('int_sync_context') }}

),

deals as (

    -- The deals the syncs since the last build wrote (the pre-hook removed those they reported deleted).
    select * from {{ ref('stg_zoho__deals') }}
    {{- written_since_last_build(build) }}

),

stages as (

    select * from {{ ref('stg_zoho__deal_stages') }}

),

stages_by_name as (

    select * from {{ ref('int_stages_by_name') }}

),

-- The deal's stage in the layout, by the rule its history follows too (macros/match_deal_stage.sql).
matched as (

    {{ match_deal_stage('deals') }}

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
        modified_at,
        {{ kept_by_record_columns(build.fingerprint) }}

    from classified
    cross join context

)

select * from final
