{#-
    Kept deal by deal (macros/kept_by_record.sql): a build rewrites the deals whose row in
    int_deals_joined_to_stages or whose history a build rewrote since its last one, and the few whose Closing_Date
    the implausible-date rule may judge otherwise now that the sync is later. A new home currency, first record
    day, time zone or user list rewrites every deal. Stored: several marts and tests read it.
-#}
{{ config(**kept_by_record_config('deal_id', pre_hook=[
    "{{ empty_when_definitions_changed(context=ref('int_sync_context'), users=ref('stg_zoho__users'),"
        ~ " context_columns='home_currency_code, first_record_date') }}",
    "{{ empty_when_upstream_rewrote_everything(ref('int_deals_joined_to_stages')) }}",
    "{{ delete_records_deleted_since_last_build('Deals', 'deal_id') }}",
])) }}

-- depends_on: {{ ref('int_deal_history') }}, {{ ref('stg_zoho__loads') }}, {{ ref('stg_zoho__deleted_records') }}
{%- set build = kept_by_record_build(definitions_fingerprint(context=ref('int_sync_context'),
    users=ref('stg_zoho__users'), context_columns='home_currency_code, first_record_date'), by_load=false) %}

with

context as (

    select * from {{ ref('int_sync_context') }}

),

-- The latest Closing_Date the sanity rule takes for plausible: a later one is a typo (2999).
plausible as (

    select {{ dbt.dateadd('year', var('implausible_years_ahead'), 'as_of_date') }} as latest_closing_date
    from context

),

deals as (

    select * from {{ ref('int_deals_joined_to_stages') }}
    {%- if not build.rewrite_all %}
    where deal_id in (
        {{ keys_rewritten_since_last_build(ref('int_deals_joined_to_stages')) }}
        union
        {{ keys_rewritten_since_last_build(ref('int_deal_history')) }}
        -- As the sync moves on, a Closing_Date the rule found too far ahead may stop being so (and, should the
        -- sync move back, one may start being so).
        union
        select deal_id from {{ this }} where has_implausible_closing_date
        union
        select deal_id
        from {{ ref('int_deals_joined_to_stages') }}
        where closing_date > (select latest_closing_date from plausible)
    )
    {%- endif %}

),

users as (

    select * from {{ ref('stg_zoho__users') }}

),

closings as (

    select * from {{ ref('int_deal_closings') }}
    {%- if not build.rewrite_all %}
    where deal_id in (select deal_id from deals)
    {%- endif %}

),

-- The deal's last close, from its history: the day it entered the won or lost stage it is in now.
last_closings as (

    select *
    from (
        select
            deal_id,
            closed_date,
            row_number() over (partition by deal_id order by changed_at desc) as recency

        from closings
    ) as ranked
    where recency = 1

),

priced as (

    select
        deals.*,
        last_closings.closed_date as history_closed_date,
        context.home_currency_code,
        -- An org without multi-currency leaves Currency empty: everything is in the home currency then.
        coalesce(deals.currency, context.home_currency_code) as currency_code,
        {{ rate_to_home('deals.currency', 'deals.exchange_rate', 'context.home_currency_code') }} as rate_to_home,
        context.first_record_date,
        plausible.latest_closing_date as latest_plausible_closing_date,
        context.synced_at

    from deals
    left join last_closings
        on deals.deal_id = last_closings.deal_id
    cross join context
    cross join plausible

),

-- The sanity rules of the CRM data (data_quality_issues lists every record that breaks one).
checked as (

    select
        priced.*,
        coalesce(priced.amount < 0, false) as has_negative_amount,
        coalesce(priced.amount is not null and (priced.rate_to_home is null or priced.rate_to_home <= 0), false)
            as has_unusable_exchange_rate,
        coalesce(priced.probability < 0 or priced.probability > 1, false) as has_probability_out_of_range,
        coalesce(priced.closing_date < priced.created_date, false) as has_closing_date_before_creation,
        coalesce(
            priced.closing_date < priced.first_record_date
            or priced.closing_date > priced.latest_plausible_closing_date,
            false
        ) as has_implausible_closing_date,
        priced.forecast_type is null as has_stage_in_no_pipeline,
        priced.owner_id is not null
            and not exists (
                select 1
                from users
                where users.user_id = priced.owner_id
            ) as has_owner_not_a_user

    from priced

),

valued as (

    select
        checked.*,
        -- A negative amount or an amount without a usable rate is left out of every sum (it stays visible as
        -- amount_in_currency); a probability outside 0..1 is left out of every weighted sum.
        {{ home_amount('amount', 'rate_to_home') }} as home_amount,
        {{ usable_probability('probability') }} as usable_probability

    from checked

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
        is_closed,
        is_won,
        cast(home_amount as {{ dbt.type_numeric() }}) as amount,
        cast(home_amount * usable_probability as {{ dbt.type_numeric() }}) as weighted_amount,
        home_currency_code,
        cast(amount as {{ dbt.type_numeric() }}) as amount_in_currency,
        currency_code,
        cast(rate_to_home as {{ dbt.type_numeric() }}) as exchange_rate,
        usable_probability as probability,
        probability as probability_in_crm,
        lead_source,
        created_at,
        created_date,
        closing_date,
        -- The day it entered its won or lost stage (history); without history, the Closing_Date rule of
        -- int_deals_joined_to_stages.
        case when status = 'open' then null else coalesce(history_closed_date, closed_date) end as closed_date,
        modified_at,
        has_negative_amount,
        has_unusable_exchange_rate,
        has_probability_out_of_range,
        has_closing_date_before_creation,
        has_implausible_closing_date,
        has_stage_in_no_pipeline,
        has_owner_not_a_user,
        {{ kept_by_record_columns(build.fingerprint, 'synced_at') }}

    from valued

)

select * from final
