with

deals as (

    select * from {{ ref('stg_zoho__deals') }}

),

stages as (

    select * from {{ ref('stg_zoho__deal_stages') }}

),

joined as (

    select
        deals.deal_id,
        deals.deal_name,
        deals.account_id,
        deals.account_name,
        deals.owner_id,
        deals.owner_name,
        deals.pipeline,
        deals.stage,
        stages.stage_order,
        stages.forecast_type,
        deals.amount,
        deals.probability,
        deals.lead_source,
        deals.created_at,
        deals.created_date,
        deals.closing_date,
        deals.modified_at

    from deals
    left join stages
        on deals.pipeline = stages.pipeline
        and deals.stage = stages.stage

),

classified as (

    select
        *,
        -- Stage names are configurable per org; the stage's forecast type is what Zoho itself uses to tell
        -- won from lost. A stage missing from the pipeline layout cannot be closed, so it counts as open.
        case forecast_type
            when 'Closed Won' then 'won'
            when 'Closed Lost' then 'lost'
            else 'open'
        end as status

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
        amount,
        probability,
        cast(amount * probability as {{ dbt.type_numeric() }}) as weighted_amount,
        lead_source,
        created_at,
        created_date,
        closing_date,
        -- By convention a closed deal's Closing_Date is the day it closed (org timezone).
        case when status <> 'open' then closing_date end as closed_date,
        modified_at

    from classified

)

select * from final
