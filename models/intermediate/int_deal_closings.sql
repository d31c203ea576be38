{#- Stored, not a view: several marts and tests read it, and as a view each of them worked it out again in every
    build. Kept deal by deal like int_deal_history (macros/kept_by_record.sql): a build rewrites the closings of
    the deals whose history it rewrote. -#}
{{ config(**kept_by_record_config('deal_id', pre_hook=[
    "{{ empty_when_upstream_rewrote_everything(ref('int_deal_history')) }}",
], synced_through=false)) }}

with

history as (

    select * from {{ ref('int_deal_history') }}
    where {{ records_rewritten_since_last_build(ref('int_deal_history'), 'deal_id') }}

),

-- A deal closes when it enters a won or lost stage from anything else. A reopened deal that closes again
-- closes twice; a close, once observed, never moves, whatever is edited on the deal afterwards.
final as (

    select
        deal_change_id as deal_closing_id,
        deal_id,
        status as outcome,
        effective_date as closed_date,
        changed_at,
        owner_id,
        amount,
        home_currency_code,
        amount_in_currency,
        currency_code,
        created_date,
        is_reconstructed,
        {{ build_started_at() }} as built_at

    from history
    where status in ('won', 'lost')
        and (previous_status is null or previous_status <> status)

)

select * from final
