{#-
    The open pipeline per owner and day, added up from deal_daily_states once. Those days never change, so
    like the daily states this adds only the days since the last build (and rewrites that build's partial
    day): kpi_daily and owner_performance_daily read a few rows per day here instead of adding up every
    open deal of every day in each build (35 million rows at a million deals).
-#}
{{ config(**adds_days_config()) }}

with

daily_states as (

    select * from {{ ref('deal_daily_states') }}
    where {{ after_last_kept_day(this, 'calendar_date') }}

),

final as (

    select
        calendar_date,
        owner_id,
        cast(count(*) as {{ dbt.type_bigint() }}) as open_pipeline_count,
        cast(sum(coalesce(amount, 0)) as {{ dbt.type_numeric() }}) as open_pipeline_amount,
        cast(sum(coalesce(weighted_amount, 0)) as {{ dbt.type_numeric() }}) as open_pipeline_weighted_amount

    from daily_states
    group by calendar_date, owner_id

)

select * from final
