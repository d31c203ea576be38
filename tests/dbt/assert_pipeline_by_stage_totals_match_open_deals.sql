-- pipeline_by_stage must account for every open deal exactly once: its totals equal the open deals in `deals`.
-- Returns a row (= failure) when they differ.

with

by_stage as (

    select
        sum(open_deals) as open_deals,
        sum(open_amount) as open_amount,
        sum(weighted_amount) as weighted_amount

    from {{ ref('pipeline_by_stage') }}

),

by_deal as (

    select
        count(*) as open_deals,
        coalesce(sum(coalesce(amount, 0)), 0) as open_amount,
        coalesce(sum(coalesce(weighted_amount, 0)), 0) as weighted_amount

    from {{ ref('deals') }}
    where status = 'open'

)

select
    by_stage.open_deals as stage_open_deals,
    by_deal.open_deals as deal_open_deals,
    by_stage.open_amount as stage_open_amount,
    by_deal.open_amount as deal_open_amount

from by_stage
cross join by_deal
where coalesce(by_stage.open_deals, 0) <> by_deal.open_deals
    or coalesce(by_stage.open_amount, 0) <> by_deal.open_amount
    or coalesce(by_stage.weighted_amount, 0) <> by_deal.weighted_amount
