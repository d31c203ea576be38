{#- A table, not a view: several marts and tests read it, and as a view each of them worked it out again. -#}
{{ config(materialized="table") }}

with

context as (

    select * from {{ ref('int_sync_context') }}

),

-- From the org's first lead or deal to the day of the last sync. Every event lies in between: nothing is
-- created, converted or closed after the last change the sync saw, and a deal closes within its own life
-- (int_deals_joined_to_stages), so a mistyped Closing_Date (1900, 2999) cannot stretch the calendar.
spine as (

    {{ calendar_days('context', 'context.first_record_date', 'context.as_of_date') }}
    where context.first_record_date is not null

)

select * from spine
