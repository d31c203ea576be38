{#-
    Kept lead by lead (macros/kept_by_record.sql): a build rewrites the leads that a sync committed since the last
    build wrote or deleted, and every lead when the time zone changed; the other leads' rows stay as they are.
    When the pass-through columns change (macros/zoho_pass_through.sql), every lead is written again.
-#}
{{ config(**kept_by_record_config('lead_id', pre_hook=[
    "{{ zoho_pass_through_pre_hook('lead', ref('stg_zoho__leads')) }}",
    "{{ empty_when_definitions_changed() }}",
    "{{ delete_records_deleted_since_last_build('Leads', 'lead_id') }}",
])) }}

-- depends_on: {{ ref('stg_zoho__loads') }}, {{ ref('stg_zoho__deleted_records') }}
{%- set build = kept_by_record_build(definitions_fingerprint(),
    also_rewrite_all=zoho_pass_through_changed('lead', this, ref('stg_zoho__leads'))) %}

with

context as (

    select * from {{ ref('int_sync_context') }}

),

leads as (

    -- The leads the syncs since the last build wrote (the pre-hook removed those they reported deleted).
    select * from {{ ref('stg_zoho__leads') }}
    {{- written_since_last_build(build) }}

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
        {{ kept_by_record_columns(build.fingerprint) }}
        {{- zoho_pass_through_select('lead', ref('stg_zoho__leads'), 'leads') }}

    from leads
    cross join context

)

select * from final
