with

deals as (

    select * from {{ ref('int_deals_joined_to_stages') }}

),

leads as (

    select * from {{ ref('stg_zoho__leads') }}

),

event_dates as (

    select created_date as event_date from deals
    union all
    select closed_date as event_date from deals
    union all
    select created_date as event_date from leads
    union all
    select converted_date as event_date from leads

),

bounds as (

    select
        -- Normally the first creation; a deal recorded as closed before anything was created still gets its day.
        min(event_date) as first_date,
        max(event_date) as last_event_date,
        {{ org_today() }} as today

    from event_dates

),

spine as (

    -- generate_series over timestamps and a lateral join read the same on PostgreSQL and DuckDB.
    select cast(series.day_start as date) as calendar_date

    from bounds
    cross join lateral generate_series(
        cast(bounds.first_date as timestamp),
        cast(greatest(bounds.today, coalesce(bounds.last_event_date, bounds.today)) as timestamp),
        interval '1 day'
    ) as series (day_start)

)

select * from spine
