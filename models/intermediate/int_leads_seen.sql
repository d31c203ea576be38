{#-
    Stored, not a view: two marts and the key tests read it, and as a view each of them ranked every version of
    every lead again. Kept lead by lead (macros/kept_by_record.sql): a build rewrites the leads that a sync
    committed since the last build brought a version of, and every lead when the time zone changed.
-#}
{{ config(**kept_by_record_config('lead_id', pre_hook=["{{ empty_when_definitions_changed() }}"])) }}

-- depends_on: {{ ref('stg_zoho__loads') }}
{%- set build = kept_by_record_build(definitions_fingerprint()) %}

with

context as (

    select * from {{ ref('int_sync_context') }}

),

versions as (

    select * from {{ ref('stg_zoho__lead_versions') }}
    {%- if not build.rewrite_all %}
    -- The leads the syncs since the last build brought a version of.
    where lead_id in (
        select lead_id
        from {{ ref('stg_zoho__lead_versions') }}
        {{- written_since_last_build(build) }}
    )
    {%- endif %}

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
        firsts.converted_date,
        {{ kept_by_record_columns(build.fingerprint) }}

    from firsts
    inner join latest
        on firsts.lead_id = latest.lead_id
    cross join context

)

select * from final
