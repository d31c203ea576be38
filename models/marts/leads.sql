{#-
    Kept lead by lead (macros/kept_by_record.sql): a build rewrites the leads that a sync committed since the last
    build wrote or deleted, and every lead when the time zone changed; the other leads' rows stay as they are.
-#}
{{ config(**kept_by_record_config('lead_id', pre_hook=[
    "{{ empty_when_definitions_changed() }}",
    "{{ delete_records_deleted_since_last_build('Leads', 'lead_id') }}",
])) }}

{%- set fingerprint = definitions_fingerprint() -%}
{%- set rewrite_all = must_rewrite_every_record(fingerprint) %}

with

loads as (

    select * from {{ ref('stg_zoho__loads') }}

),

deletions as (

    select * from {{ ref('stg_zoho__deleted_records') }}
    where module = 'Leads'

),

context as (

    select * from {{ ref('int_sync_context') }}

),

{% if not rewrite_all -%}
-- The syncs committed since the last build.
new_loads as (

    {{ loads_since_last_build('loads') }}

),

{% endif -%}
leads as (

    select * from {{ ref('stg_zoho__leads') }}
    {%- if not rewrite_all %}
    -- The leads those syncs wrote, or reported deleted (the pre-hook removed those; a lead restored since is
    -- live again).
    where load_id in (select load_id from new_loads)
        or lead_id in (
            select record_id
            from deletions
            where load_id in (select load_id from new_loads)
        )
    {%- endif %}

),

final as (

    select
        leads.lead_id,
        leads.full_name,
        leads.company,
        leads.owner_id,
        leads.owner_name,
        leads.lead_source,
        leads.lead_status,
        leads.created_at,
        leads.created_date,
        leads.is_converted,
        leads.converted_at,
        leads.converted_date,
        leads.converted_deal_id,
        cast({{ dbt.datediff('leads.created_date', 'leads.converted_date', 'day') }} as {{ dbt.type_int() }})
            as days_to_convert,
        leads.modified_at,
        {{ kept_by_record_columns(fingerprint) }}

    from leads
    cross join context

)

select * from final
