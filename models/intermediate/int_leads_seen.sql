with

versions as (

    select * from {{ ref('stg_zoho__lead_versions') }}

),

latest as (

    select *
    from (
        select
            versions.*,
            row_number() over (partition by lead_id order by modified_at desc) as recency

        from versions
    ) as ranked
    where recency = 1

),

firsts as (

    select
        lead_id,
        min(created_date) as created_date,
        min(converted_date) as converted_date

    from versions
    group by lead_id

),

final as (

    select
        firsts.lead_id,
        latest.lead_source,
        latest.owner_id,
        firsts.created_date,
        firsts.converted_date

    from firsts
    inner join latest
        on firsts.lead_id = latest.lead_id

)

select * from final
