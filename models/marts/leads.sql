{#-
    Kept lead by lead (macros/kept_by_record.sql): a build rewrites the leads that a sync committed since the last
    build wrote or deleted, and every lead when the time zone changed; the other leads' rows stay as they are.
-#}
{{ config(**kept_by_record_config('lead_id', pre_hook=[
    "{{ empty_when_definitions_changed() }}",
    "{{ delete_records_deleted_since_last_build('Leads', 'lead_id') }}",
])) }}

-- depends_on: {{ ref('stg_zoho__loads') }}, {{ ref('stg_zoho__deleted_records') }}
{%- set fingerprint = definitions_fingerprint() -%}
{%- set rewrite_all = must_rewrite_every_record(fingerprint) -%}
{#- The syncs committed since the last build (their load ids). -#}
{%- set new_loads = none if rewrite_all else loads_since_last_build() %}

with

context as (

    select * from {{ ref('int_sync_context') }}

),

leads as (

    select * from {{ ref('stg_zoho__leads') }}
    {%- if not rewrite_all %}
    -- The leads those syncs wrote (the pre-hook removed those they reported deleted).
    where load_id in {{ new_loads }}
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
