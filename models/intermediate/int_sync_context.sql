{#- The one row every "as of" in the marts reads: when the data was synced, which day that is, and the
    org's home currency. A table, not a view: about twenty models and tests read it, and as a view each of them
    scanned every version of every record again for the newest change. -#}
{{ config(materialized="table") }}

with

loads as (

    select * from {{ ref('stg_zoho__loads') }}

),

-- Every version the syncs kept: a record deleted since still happened.
leads as (

    select * from {{ ref('stg_zoho__lead_versions') }}

),

deals as (

    select * from {{ ref('stg_zoho__deal_versions') }}

),

deletions as (

    select * from {{ ref('stg_zoho__deleted_records') }}

),

currencies as (

    select * from {{ ref('stg_zoho__currencies') }}

),

last_sync as (

    select max(loaded_at) as synced_at
    from loads
    where is_committed

),

-- The newest change and the oldest creation among every version of each module, in one pass over each (the
-- versions are read once: PostgreSQL would otherwise keep a whole copy of a module's versions for two readers).
record_extremes as (

    select
        max(modified_at) as changed_at,
        min(created_at) as created_at
    from leads

    union all

    select
        max(modified_at) as changed_at,
        min(created_at) as created_at
    from deals

),

-- The newest instant the CRM itself reported. An org whose clock runs ahead of the extractor's machine
-- reports changes "later" than the sync that read them; the data is as of that later instant then.
last_change as (

    select max(changed_at) as changed_at
    from (
        select changed_at from record_extremes
        union all
        select max(deleted_at) as changed_at from deletions
    ) as newest

),

-- The day of the oldest creation instant: the same day as the oldest created_date (a later instant is never on
-- an earlier day), without converting every version's instant to the org's time zone.
first_record as (

    select {{ to_org_date('min(created_at)') }} as first_record_date
    from record_extremes

),

home_currency as (

    select min(currency_code) as home_currency_code
    from currencies
    where is_home_currency

),

joined as (

    select
        last_sync.synced_at,
        case
            when last_change.changed_at > last_sync.synced_at then last_change.changed_at
            else coalesce(last_sync.synced_at, last_change.changed_at, current_timestamp)
        end as as_of_at,
        first_record.first_record_date,
        -- ISO 4217's "no currency" when the org's currencies were never loaded.
        coalesce(home_currency.home_currency_code, 'XXX') as home_currency_code

    from last_sync
    cross join last_change
    cross join first_record
    cross join home_currency

),

final as (

    select
        cast(synced_at as {{ type_timestamptz() }}) as synced_at,
        cast(as_of_at as {{ type_timestamptz() }}) as as_of_at,
        {{ to_org_date('cast(as_of_at as ' ~ type_timestamptz() ~ ')') }} as as_of_date,
        first_record_date,
        cast(home_currency_code as {{ dbt.type_string() }}) as home_currency_code

    from joined

)

select * from final
