with

leads as (

    select * from {{ ref('int_leads_seen') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

cohorts as (

    select
        coalesce(lead_source, '(none)') as lead_source,
        cast({{ dbt.date_trunc('month', 'created_date') }} as date) as cohort_month,
        count(*) as leads_created,
        count(converted_date) as leads_converted_so_far,
        sum(case when converted_date is not null then {{ dbt.datediff('created_date', 'converted_date', 'day') }} end)
            as days_to_convert

    from leads
    group by coalesce(lead_source, '(none)'), cast({{ dbt.date_trunc('month', 'created_date') }} as date)

),

final as (

    select
        {{ dbt.concat(['lead_source', "'-'", 'cast(cohort_month as ' ~ dbt.type_string() ~ ')']) }} as cohort_id,
        lead_source,
        cohort_month,
        cast(leads_created as {{ dbt.type_bigint() }}) as leads_created,
        cast(leads_converted_so_far as {{ dbt.type_bigint() }}) as leads_converted_so_far,
        {{ divide('leads_converted_so_far', 'leads_created') }} as conversion_rate_so_far,
        {{ divide('days_to_convert', 'leads_converted_so_far') }} as average_days_to_convert,
        context.as_of_date

    from cohorts
    cross join context

)

select * from final
