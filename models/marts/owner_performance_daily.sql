with

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

deal_activity as (

    select * from {{ ref('int_deal_activity_by_owner_day') }}

),

open_by_owner as (

    select * from {{ ref('int_open_pipeline_by_owner_day') }}

),

users as (

    select * from {{ ref('stg_zoho__users') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

-- Every deal counts for the owner it had at the moment: created for its first owner, closed for its owner
-- at the close (both already per owner and day in int_deal_activity_by_owner_day), open for its owner that evening.
open_pipeline as (

    select
        calendar_date as activity_date,
        owner_id,
        open_pipeline_count,
        open_pipeline_amount,
        open_pipeline_weighted_amount

    from open_by_owner

),

owners as (

    select owner_id from deal_activity
    union
    select owner_id from open_pipeline

),

owner_days as (

    select
        calendar.calendar_date as activity_date,
        owners.owner_id

    from calendar
    cross join owners

),

final as (

    select
        {{ dbt.concat(['cast(owner_days.activity_date as ' ~ dbt.type_string() ~ ')', "'-'",
                       "coalesce(owner_days.owner_id, 'none')"]) }} as owner_day_id,
        owner_days.activity_date,
        owner_days.owner_id,
        users.full_name as owner_name,
        cast(coalesce(deal_activity.deals_created, 0) as {{ dbt.type_bigint() }}) as deals_created,
        cast(coalesce(deal_activity.deals_created_amount, 0) as {{ dbt.type_numeric() }}) as deals_created_amount,
        cast(coalesce(deal_activity.deals_won, 0) as {{ dbt.type_bigint() }}) as deals_won,
        cast(coalesce(deal_activity.deals_won_amount, 0) as {{ dbt.type_numeric() }}) as deals_won_amount,
        cast(coalesce(deal_activity.deals_lost, 0) as {{ dbt.type_bigint() }}) as deals_lost,
        cast(coalesce(deal_activity.deals_lost_amount, 0) as {{ dbt.type_numeric() }}) as deals_lost_amount,
        {{ divide('coalesce(deal_activity.deals_won, 0)',
                  'coalesce(deal_activity.deals_won, 0) + coalesce(deal_activity.deals_lost, 0)') }}
            as win_rate,
        cast(coalesce(open_pipeline.open_pipeline_count, 0) as {{ dbt.type_bigint() }}) as open_pipeline_count,
        cast(coalesce(open_pipeline.open_pipeline_amount, 0) as {{ dbt.type_numeric() }}) as open_pipeline_amount,
        cast(coalesce(open_pipeline.open_pipeline_weighted_amount, 0) as {{ dbt.type_numeric() }})
            as open_pipeline_weighted_amount,
        context.home_currency_code,
        owner_days.activity_date < context.as_of_date as is_complete

    from owner_days
    cross join context
    left join users
        on owner_days.owner_id = users.user_id
    left join deal_activity
        on owner_days.activity_date = deal_activity.activity_date
        and {{ null_safe_equals("owner_days.owner_id", "deal_activity.owner_id") }}
    left join open_pipeline
        on owner_days.activity_date = open_pipeline.activity_date
        and {{ null_safe_equals("owner_days.owner_id", "open_pipeline.owner_id") }}

)

select * from final
