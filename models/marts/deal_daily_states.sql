{#-
    Incremental: a day complete at the last build never changes (its state is what the syncs saw), so a build adds
    the days since the last one it holds and rewrites that last day (the last build's partial day) for the deals
    whose history int_deal_history rewrote since: every other deal was in the same state at the end of that day
    as when the last build wrote it. At a million deals a build writes a day's 330k open deals and the day's
    10k changed ones, instead of those 330k twice and deleting them once. `dbt build --full-refresh` rebuilds
    every day from the history. On PostgreSQL an index on the day finds those last days without reading the whole
    table (DuckDB needs none: macros/last_day.sql).
-#}
{#- On PostgreSQL an index on built_at too: the key test reads the last build's rows (unique_in_last_build), which
    took two scans of every daily state of every day without it. A warehouse built before it has the
    index after a full refresh. -#}
{#- The pass-through columns (macros/zoho_pass_through.sql) hold each day what the deal's state that evening held.
    When they change, the build drops the old ones and writes every day again: past days need the new ones too. -#}
{%- set settings = adds_days_config(more_indexes=postgres_only_indexes(['built_at']),
                                    upstream='int_deal_history', key='deal_id') -%}
{%- do settings['pre_hook'].append(
    "{{ zoho_pass_through_pre_hook('deal', ref('int_deal_history'), 'pass_through__') }}") -%}
{{ config(**settings) }}

{#- The last day held when the build starts; its pre-hook removes that day's rows of the deals rewritten since. -#}
{%- set last_day = none if zoho_pass_through_changed('deal', this, ref('int_deal_history'), 'pass_through__')
    else last_kept_day(this) %}

with

history as (

    select * from {{ ref('int_deal_history') }}

),

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

open_spans as (

    select *
    from history
    where status = 'open'
        and (valid_to_date is null or valid_to_date > valid_from_date)
        {%- if last_day is not none %}
        -- Only the spans still open on a day this build adds: a daily build joins the deals open now, not
        -- every span of the history, to the calendar.
        and (valid_to_date is null or valid_to_date > {{ last_day }})
        {%- endif %}

),
{%- if last_day is not none %}

-- The deals whose history int_deal_history rewrote since the last build: the pre-hook removed their rows of the
-- last day held, and this build writes that day again for them. Joined, not `in (...)` beside an `or`: on
-- PostgreSQL that is a subplan, which a day rewriting every deal would run as a loop over a million keys.
rewritten_deals as (

    select distinct deal_id
    from ({{ keys_rewritten_since_last_build(ref('int_deal_history')) }}) as rewritten

),
{%- endif %}

final as (

    select
        {{ dbt.concat(['cast(calendar.calendar_date as ' ~ dbt.type_string() ~ ')', "'-'", 'open_spans.deal_id']) }}
            as deal_day_id,
        calendar.calendar_date,
        open_spans.deal_id,
        open_spans.owner_id,
        open_spans.pipeline,
        open_spans.stage,
        open_spans.stage_order,
        open_spans.amount,
        open_spans.probability,
        open_spans.weighted_amount,
        open_spans.home_currency_code,
        open_spans.amount_in_currency,
        open_spans.currency_code,
        open_spans.exchange_rate,
        open_spans.closing_date,
        open_spans.created_date,
        -- Before the first change a sync saw, the state is worked out (Stage History, or the open span of a
        -- deal first seen closed); after it, it is what the syncs saw.
        open_spans.is_reconstructed or calendar.calendar_date < {{ to_org_date('open_spans.changed_at') }}
            as is_reconstructed,
        {{ build_started_at() }} as built_at
        {{- zoho_pass_through_select('deal', ref('int_deal_history'), 'open_spans', prefix='pass_through__') }}

    from open_spans
    inner join calendar
        on calendar.calendar_date >= open_spans.valid_from_date
        and (open_spans.valid_to_date is null or calendar.calendar_date < open_spans.valid_to_date)
    {%- if last_day is not none %}
    left join rewritten_deals
        on open_spans.deal_id = rewritten_deals.deal_id
    -- The days since the last one held, and that day again for the deals whose rows there the pre-hook removed.
    where calendar.calendar_date > {{ last_day }}
        or (calendar.calendar_date = {{ last_day }} and rewritten_deals.deal_id is not null)
    {%- endif %}

)

select * from final
