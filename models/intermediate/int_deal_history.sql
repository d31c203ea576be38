{#-
    Kept deal by deal (macros/kept_by_record.sql): a build rewrites the history of each deal with a version,
    a Stage History entry or a deletion from a sync committed since the last build, and every deal when the
    stage layout, the home currency, the time zone or the pass-through columns changed. Each change carries the
    pass-through columns (macros/zoho_pass_through.sql) of its version, prefixed `pass_through__` so that they
    never clash with the columns here; deal_daily_states names them as in zoho_raw.
-#}
{{ config(**kept_by_record_config('deal_id', pre_hook=[
    "{{ empty_when_definitions_or_pass_through_changed('deal', ref('stg_zoho__deal_versions'), 'pass_through__',"
        ~ " ref('stg_zoho__deal_stages'), ref('int_sync_context')) }}",
])) }}

-- depends_on: {{ ref('stg_zoho__loads') }}
{%- set build = kept_by_record_build(zoho_pass_through_fingerprint(
    definitions_fingerprint(ref('stg_zoho__deal_stages'), ref('int_sync_context')), 'deal',
    ref('stg_zoho__deal_versions'))) %}

with

{% if not build.rewrite_all -%}
-- The deals the syncs since the last build brought a version, a Stage History entry or a deletion of.
changed_deals as (

    select deal_id
    from {{ ref('stg_zoho__deal_versions') }}
    {{- written_since_last_build(build) }}

    union

    select deal_id
    from {{ ref('stg_zoho__deal_stage_history') }}
    {{- written_since_last_build(build) }}

    union

    select record_id as deal_id
    from {{ ref('stg_zoho__deleted_records') }}
    where module = 'Deals'
        and load_id in {{ build.new_loads }}

),

{% endif -%}
versions as (

    select * from {{ ref('stg_zoho__deal_versions') }}
    {%- if not build.rewrite_all %}
    where deal_id in (select deal_id from changed_deals)
    {%- endif %}

),

stage_history as (

    select * from {{ ref('stg_zoho__deal_stage_history') }}
    {%- if not build.rewrite_all %}
    where deal_id in (select deal_id from changed_deals)
    {%- endif %}

),

stages as (

    select * from {{ ref('stg_zoho__deal_stages') }}

),

stages_by_name as (

    select * from {{ ref('int_stages_by_name') }}

),

deletions as (

    select * from {{ ref('stg_zoho__deleted_records') }}
    where module = 'Deals'
    {%- if not build.rewrite_all %}
        and record_id in (select deal_id from changed_deals)
    {%- endif %}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

first_versions as (

    select *
    from (
        select
            versions.*,
            row_number() over (partition by deal_id order by modified_at) as version_number

        from versions
    ) as numbered
    where version_number = 1

),

-- What the syncs saw: each version holds from the moment it was saved until the next one.
observed as (

    select
        deal_id,
        modified_at as changed_at,
        stage,
        pipeline,
        amount,
        currency,
        exchange_rate,
        probability,
        closing_date,
        owner_id,
        created_at,
        created_date,
        'sync' as source
        {{- zoho_pass_through_select('deal', ref('stg_zoho__deal_versions'), 'versions', as_prefix='pass_through__') }}

    from versions

),

-- Before the first version a sync saw, Zoho's Stage History tells how the stage, amount and probability
-- moved; the attributes it does not record (pipeline, currency, rate, owner) come from that first version.
backfilled as (

    select
        first_versions.deal_id,
        stage_history.changed_at,
        stage_history.stage,
        first_versions.pipeline,
        stage_history.amount,
        first_versions.currency,
        first_versions.exchange_rate,
        stage_history.probability,
        stage_history.closing_date,
        first_versions.owner_id,
        first_versions.created_at,
        first_versions.created_date,
        'stage_history' as source
        {{- zoho_pass_through_select('deal', ref('stg_zoho__deal_versions'), 'first_versions',
            as_prefix='pass_through__') }}

    from stage_history
    inner join first_versions
        on stage_history.deal_id = first_versions.deal_id
    where stage_history.changed_at < first_versions.modified_at

),

-- A deal first seen closed, with no Stage History before it, was open from its creation until it closed:
-- at which stage and probability nobody knows any more, so the span carries none.
reconstructed as (

    select
        first_versions.deal_id,
        first_versions.created_at as changed_at,
        cast(null as {{ dbt.type_string() }}) as stage,
        first_versions.pipeline,
        first_versions.amount,
        first_versions.currency,
        first_versions.exchange_rate,
        cast(null as {{ dbt.type_numeric() }}) as probability,
        first_versions.closing_date,
        first_versions.owner_id,
        first_versions.created_at,
        first_versions.created_date,
        'reconstructed' as source
        {{- zoho_pass_through_select('deal', ref('stg_zoho__deal_versions'), 'first_versions',
            as_prefix='pass_through__') }}

    from first_versions
    left join stages
        on first_versions.pipeline = stages.pipeline
        and first_versions.stage = stages.stage
    where coalesce(stages.forecast_type, 'Open') <> 'Open'
        and first_versions.modified_at > first_versions.created_at
        and not exists (
            select 1
            from stage_history
            where stage_history.deal_id = first_versions.deal_id
                and stage_history.changed_at < first_versions.modified_at
        )

),

changes as (

    select * from observed
    union all
    select * from backfilled
    union all
    select * from reconstructed

),

-- The stage's forecast type decides open, won and lost, by the stage int_deals_joined_to_stages matches
-- too (macros/match_deal_stage.sql).
classified as (

    {{ match_deal_stage('changes') }}

),

valued as (

    select
        classified.deal_id,
        classified.changed_at,
        classified.source,
        classified.stage,
        coalesce(classified.pipeline, stages.pipeline) as pipeline,
        stages.stage_order,
        stages.forecast_type,
        {{ deal_status('stages.forecast_type') }} as status,
        classified.owner_id,
        classified.amount as amount_in_currency,
        coalesce(classified.currency, context.home_currency_code) as currency_code,
        {{ rate_to_home('classified.currency', 'classified.exchange_rate', 'context.home_currency_code') }}
            as exchange_rate,
        context.home_currency_code,
        context.synced_at as synced_through,
        {{ usable_probability('classified.probability') }} as probability,
        classified.closing_date,
        classified.created_at,
        classified.created_date,
        {{ to_org_date('classified.changed_at') }} as changed_date
        {{- zoho_pass_through_list('deal', 'classified', 'pass_through__') }}

    from classified
    left join stages
        on classified.matched_stage_id = stages.stage_id
    cross join context

),

ordered as (

    select
        valued.*,
        row_number() over (partition by deal_id order by changed_at) as change_number,
        lead(changed_at) over (partition by deal_id order by changed_at) as next_changed_at,
        lag(status) over (partition by deal_id order by changed_at) as previous_status,
        lag(source) over (partition by deal_id order by changed_at) as previous_source

    from valued

),

-- The day each change took effect. A close that only the reconstructed span precedes is dated as
-- int_deals_joined_to_stages dates a close without history: its Closing_Date when that lies within the
-- deal's life, otherwise the day of the change.
dated as (

    select
        ordered.*,
        case
            when previous_source = 'reconstructed'
                and closing_date between created_date and changed_date then closing_date
            else changed_date
        end as effective_date

    from ordered

),

deleted as (

    select
        record_id as deal_id,
        max(deleted_at) as deleted_at

    from deletions
    group by record_id

),

final as (

    select
        {{ dbt.concat(['dated.deal_id', "'-'", 'cast(dated.change_number as ' ~ dbt.type_string() ~ ')']) }}
            as deal_change_id,
        dated.deal_id,
        cast(dated.change_number as {{ dbt.type_int() }}) as change_number,
        dated.source,
        dated.source <> 'sync' as is_reconstructed,
        dated.changed_at,
        -- The first change also stands for the deal's life before it (from the day it was created).
        case when dated.change_number = 1 then dated.created_date else dated.effective_date end as valid_from_date,
        -- Exclusive: the day the next change took effect, or the deal was deleted; null while current.
        coalesce(
            lead(dated.effective_date) over (partition by dated.deal_id order by dated.changed_at),
            case when deleted.deleted_at >= dated.changed_at then {{ to_org_date('deleted.deleted_at') }} end
        ) as valid_to_date,
        dated.effective_date,
        dated.status,
        dated.previous_status,
        dated.stage,
        dated.pipeline,
        dated.stage_order,
        dated.forecast_type,
        dated.owner_id,
        cast({{ home_amount('dated.amount_in_currency', 'dated.exchange_rate') }} as {{ dbt.type_numeric() }})
            as amount,
        cast(
            {{ home_amount('dated.amount_in_currency', 'dated.exchange_rate') }} * dated.probability
            as {{ dbt.type_numeric() }}
        ) as weighted_amount,
        dated.home_currency_code,
        dated.amount_in_currency,
        dated.currency_code,
        dated.exchange_rate,
        dated.probability,
        dated.closing_date,
        dated.created_at,
        dated.created_date,
        {{ kept_by_record_columns(build.fingerprint, 'dated.synced_through') }}
        {{- zoho_pass_through_list('deal', 'dated', 'pass_through__') }}

    from dated
    left join deleted
        on dated.deal_id = deleted.deal_id

)

select * from final
