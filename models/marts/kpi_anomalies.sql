{#- The flows kpi_daily counts, each with the count that says how many events make it up: a small count is judged
    by the week, and so is money, whose day is one big deal away from any figure. Levels (the open pipeline) and
    ratios are not judged: a level's move is the flows' sum, and a day's ratio of a few deals is noise. -#}
{%- set judged_metrics = [
    ('leads_created', 'leads_created'),
    ('leads_converted', 'leads_converted'),
    ('deals_created', 'deals_created'),
    ('deals_created_amount', 'deals_created'),
    ('deals_won', 'deals_won'),
    ('deals_won_amount', 'deals_won'),
    ('deals_lost', 'deals_lost'),
    ('deals_lost_amount', 'deals_lost'),
] -%}
{%- set numeric = dbt.type_numeric() -%}

with

kpi_daily as (

    select * from {{ ref('kpi_daily') }}

),

judged_metrics as (

    {% for metric, count_metric in judged_metrics %}
    select
        cast('{{ metric }}' as {{ dbt.type_string() }}) as metric,
        cast('{{ count_metric }}' as {{ dbt.type_string() }}) as count_metric,
        {{ 'true' if metric == count_metric else 'false' }} as is_count
    {% if not loop.last %}
    union all
    {% endif %}
    {%- endfor %}

),

weeks_back as (

    {% for n in range(1, var('anomaly_baseline_weeks') + 1) %}
    select {{ n }} as n
    {% if not loop.last %}
    union all
    {% endif %}
    {%- endfor %}

),

-- Only complete days: the day of the last sync is still running, and its counts can only grow.
complete_days as (

    select
        kpi_daily.kpi_date,
        kpi_daily.metric,
        kpi_daily.value,
        kpi_daily.unit,
        judged_metrics.count_metric,
        judged_metrics.is_count,
        cast({{ dbt.date_trunc('week', 'kpi_daily.kpi_date') }} as date) as week_start

    from kpi_daily
    inner join judged_metrics on kpi_daily.metric = judged_metrics.metric
    where kpi_daily.is_complete

),

-- Weeks run Monday to Sunday; a week counts once all seven of its days are complete.
complete_weeks as (

    select
        metric,
        week_start,
        sum(value) as value

    from complete_days
    group by metric, week_start
    having count(*) = 7

),

count_weeks as (

    select distinct
        metric,
        week_start

    from complete_days
    where is_count

),

-- Each week's usual weekly count of each count metric, from the complete weeks before it: below
-- anomaly_min_daily_count a day, the week's days are judged together, else each day on its own.
usual_weekly_counts as (

    select
        weeks.metric,
        weeks.week_start,
        {{ median('earlier.value') }} as usual_count

    from count_weeks as weeks
    cross join weeks_back
    inner join complete_weeks as earlier
        on
            weeks.metric = earlier.metric
            and earlier.week_start = cast({{ dbt.dateadd('day', '-7 * weeks_back.n', 'weeks.week_start') }} as date)
    group by weeks.metric, weeks.week_start
    having count(*) >= {{ var('anomaly_min_baseline_points') }}

),

day_judgements as (

    select
        complete_days.metric,
        cast('day' as {{ dbt.type_string() }}) as period,
        complete_days.kpi_date as window_start,
        complete_days.kpi_date,
        complete_days.value,
        complete_days.unit,
        complete_days.is_count

    from complete_days
    inner join usual_weekly_counts
        on
            complete_days.count_metric = usual_weekly_counts.metric
            and complete_days.week_start = usual_weekly_counts.week_start
    where
        complete_days.is_count
        and usual_weekly_counts.usual_count >= 7 * {{ var('anomaly_min_daily_count') }}

),

week_judgements as (

    select
        complete_days.metric,
        cast('week' as {{ dbt.type_string() }}) as period,
        complete_days.week_start as window_start,
        complete_days.kpi_date,
        complete_weeks.value,
        complete_days.unit,
        complete_days.is_count

    from complete_days
    inner join complete_weeks
        on
            complete_days.metric = complete_weeks.metric
            and complete_days.week_start = complete_weeks.week_start
    inner join usual_weekly_counts
        on
            complete_days.count_metric = usual_weekly_counts.metric
            and complete_days.week_start = usual_weekly_counts.week_start
    where
        complete_days.kpi_date = cast({{ dbt.dateadd('day', 6, 'complete_days.week_start') }} as date)
        and (
            not complete_days.is_count
            or usual_weekly_counts.usual_count < 7 * {{ var('anomaly_min_daily_count') }}
        )

),

judgements as (

    select * from day_judgements
    union all
    select * from week_judgements

),

-- What each judged day or week is compared with: the same weekday (or the whole week) in the weeks before.
periods as (

    select
        metric,
        cast('day' as {{ dbt.type_string() }}) as period,
        kpi_date as window_start,
        value
    from complete_days
    union all
    select
        metric,
        cast('week' as {{ dbt.type_string() }}) as period,
        week_start as window_start,
        value
    from complete_weeks

),

baseline_points as (

    select
        judgements.metric,
        judgements.period,
        judgements.window_start,
        earlier.value

    from judgements
    cross join weeks_back
    inner join periods as earlier
        on
            judgements.metric = earlier.metric
            and judgements.period = earlier.period
            and earlier.window_start
            = cast({{ dbt.dateadd('day', '-7 * weeks_back.n', 'judgements.window_start') }} as date)

),

baseline_medians as (

    select
        metric,
        period,
        window_start,
        {{ median('value') }} as baseline_median,
        count(*) as baseline_days

    from baseline_points
    group by metric, period, window_start
    having count(*) >= {{ var('anomaly_min_baseline_points') }}

),

-- The median absolute deviation: how far the usual days stray from their median, untouched by one odd day.
baseline_spreads as (

    select
        baseline_points.metric,
        baseline_points.period,
        baseline_points.window_start,
        {{ median('abs(baseline_points.value - baseline_medians.baseline_median)') }} as median_absolute_deviation

    from baseline_points
    inner join baseline_medians
        on
            baseline_points.metric = baseline_medians.metric
            and baseline_points.period = baseline_medians.period
            and baseline_points.window_start = baseline_medians.window_start
    group by baseline_points.metric, baseline_points.period, baseline_points.window_start

),

banded as (

    select
        judgements.*,
        baseline_medians.baseline_median,
        baseline_medians.baseline_days,
        -- 1.4826 x MAD estimates a standard deviation; a floor keeps a run of identical days from making any
        -- change look unusual.
        greatest(
            cast(1.4826 as {{ numeric }}) * baseline_spreads.median_absolute_deviation,
            case
                when judgements.is_count
                    then cast({{ var('anomaly_count_floor') }} as {{ numeric }})
                    * cast(sqrt(greatest(baseline_medians.baseline_median, 1)) as {{ numeric }})
                else cast({{ var('anomaly_amount_floor') }} as {{ numeric }}) * baseline_medians.baseline_median
            end
        ) as spread

    from judgements
    inner join baseline_medians
        on
            judgements.metric = baseline_medians.metric
            and judgements.period = baseline_medians.period
            and judgements.window_start = baseline_medians.window_start
    inner join baseline_spreads
        on
            judgements.metric = baseline_spreads.metric
            and judgements.period = baseline_spreads.period
            and judgements.window_start = baseline_spreads.window_start

),

ranged as (

    select
        *,
        -- Counts and amounts are never negative: the usual range starts at zero at the lowest.
        greatest(baseline_median - cast({{ var('anomaly_band_width') }} as {{ numeric }}) * spread, 0) as expected_low,
        baseline_median + cast({{ var('anomaly_band_width') }} as {{ numeric }}) * spread as expected_high,
        -- The change must matter too: a few items for a count, and a share of the median for anything.
        abs(value - baseline_median) >= {{ var('anomaly_min_relative_change') }} * baseline_median
        and (not is_count or abs(value - baseline_median) >= {{ var('anomaly_min_count_change') }}) as change_matters

    from banded

),

final as (

    select
        {{ dbt.concat(['cast(kpi_date as ' ~ dbt.type_string() ~ ')', "'-'", 'metric']) }} as anomaly_id,
        kpi_date,
        metric,
        period,
        window_start,
        cast(value as {{ numeric }}) as value,
        unit,
        cast(expected_low as {{ numeric }}) as expected_low,
        cast(expected_high as {{ numeric }}) as expected_high,
        cast(baseline_median as {{ numeric }}) as baseline_median,
        cast(baseline_days as integer) as baseline_days,
        change_matters and (value < expected_low or value > expected_high) as is_anomaly,
        case
            when change_matters and value > expected_high then 'high'
            when change_matters and value < expected_low then 'low'
        end as direction,
        cast(
            case
                when period = 'day' then 'same_weekday_last_{{ var("anomaly_baseline_weeks") }}_weeks'
                else 'week_total_last_{{ var("anomaly_baseline_weeks") }}_weeks'
            end as {{ dbt.type_string() }}
        ) as rule

    from ranged

)

select * from final
