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

),

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
            as is_reconstructed

    from open_spans
    inner join calendar
        on calendar.calendar_date >= open_spans.valid_from_date
        and (open_spans.valid_to_date is null or calendar.calendar_date < open_spans.valid_to_date)

)

select * from final
