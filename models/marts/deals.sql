{#-
    Kept deal by deal (macros/kept_by_record.sql): a build rewrites the deals int_deals_in_home_currency rewrote
    since its last one, and the open deals whose days_open the new day of the sync moves on; the closed deals
    and the others stay as they are. The pass-through columns (macros/zoho_pass_through.sql) come from the live
    deal; when they change, every deal is written again.
-#}
{{ config(**kept_by_record_config('deal_id', pre_hook=[
    "{{ zoho_pass_through_pre_hook('deal', ref('stg_zoho__deals')) }}",
    "{{ empty_when_definitions_changed() }}",
    "{{ empty_when_upstream_rewrote_everything(ref('int_deals_in_home_currency')) }}",
    "{{ delete_records_deleted_since_last_build('Deals', 'deal_id') }}",
])) }}

-- depends_on: {{ ref('stg_zoho__loads') }}, {{ ref('stg_zoho__deleted_records') }}
{%- set build = kept_by_record_build(definitions_fingerprint(),
    also_rewrite_all=zoho_pass_through_changed('deal', this, ref('stg_zoho__deals')), by_load=false) %}

with

context as (

    select * from {{ ref('int_sync_context') }}

),

deals as (

    select * from {{ ref('int_deals_in_home_currency') }}
    {%- if not build.rewrite_all %}
    where deal_id in (
        {{ keys_rewritten_since_last_build(ref('int_deals_in_home_currency')) }}
        union
        select kept.deal_id
        from {{ this }} as kept
        cross join context
        where kept.closed_date is null
            and kept.days_open <> {{ dbt.datediff('kept.created_date', 'context.as_of_date', 'day') }}
    )
    {%- endif %}

),

{%- if zoho_pass_through_names('deal') %}

-- The Zoho fields passed through (var zoho_deal_pass_through_columns), as the live deal has them.
live_deals as (

    select * from {{ ref('stg_zoho__deals') }}

),
{%- endif %}

final as (

    select
        deals.deal_id,
        deals.deal_name,
        deals.account_id,
        deals.account_name,
        deals.owner_id,
        deals.owner_name,
        deals.pipeline,
        deals.stage,
        deals.stage_order,
        deals.forecast_type,
        deals.status,
        deals.is_closed,
        deals.is_won,
        deals.amount,
        deals.probability,
        deals.weighted_amount,
        deals.home_currency_code,
        deals.amount_in_currency,
        deals.currency_code,
        deals.exchange_rate,
        deals.lead_source,
        deals.created_at,
        deals.created_date,
        deals.closing_date,
        deals.closed_date,
        deals.modified_at,
        cast(
            {{ dbt.datediff('deals.created_date', 'coalesce(deals.closed_date, context.as_of_date)', 'day') }}
            as {{ dbt.type_int() }}
        ) as days_open,
        cast({{ dbt.datediff('deals.created_date', 'deals.closed_date', 'day') }} as {{ dbt.type_int() }})
            as days_to_close,
        {{ kept_by_record_columns(build.fingerprint) }}
        {{- zoho_pass_through_select('deal', ref('stg_zoho__deals'), 'live_deals') }}

    from deals
    cross join context
    {%- if zoho_pass_through_names('deal') %}
    left join live_deals
        on deals.deal_id = live_deals.deal_id
    {%- endif %}

)

select * from final
