with

leads as (

    select * from {{ ref('int_leads_seen') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

events as (

    select
        coalesce(lead_source, '(none)') as lead_source,
        created_date as event_date,
        1 as created,
        0 as converted
    from leads

    union all

    select
        coalesce(lead_source, '(none)') as lead_source,
        converted_date as event_date,
        0 as created,
        1 as converted
    from leads
    where converted_date is not null

),

by_day as (

    select
        lead_source,
        event_date,
        sum(created) as leads_created,
        sum(converted) as leads_converted

    from events
    group by lead_source, event_date

),

final as (

    select
        {{ dbt.concat(['lead_source', "'-'", 'cast(event_date as ' ~ dbt.type_string() ~ ')']) }} as source_day_id,
        lead_source,
        event_date,
        cast(leads_created as {{ dbt.type_bigint() }}) as leads_created,
        cast(leads_converted as {{ dbt.type_bigint() }}) as leads_converted_that_day,
        event_date < context.as_of_date as is_complete

    from by_day
    cross join context

)

select * from final
