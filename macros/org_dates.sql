{#-
    Calendar dates in the org's timezone.

    Zoho stores instants (dlt loads them as UTC timestamptz), but "which day did this lead arrive" is a question
    about the org's wall clock. Every *_date column and every kpi_date therefore goes through `to_org_date`
    instead of `cast(ts as date)`, whose answer would silently depend on the session timezone of whoever runs dbt.
    The timezone is the var `crm_timezone` (dbt_project.yml reads it from env CRM_TIMEZONE, default UTC).
-#}

{#- Only 'UTC' or an IANA Area/Location name (Asia/Kolkata, America/Argentina/Buenos_Aires, Etc/GMT-5) passes.
    Anything else the two warehouses read differently, silently: 'IST' is India on DuckDB and Israel on
    PostgreSQL, 'UTC+5' is five hours ahead on DuckDB and behind on PostgreSQL (POSIX signs), '+05:30' fails
    on DuckDB only. Refusing them at compile time stops a build before it cuts any day wrong. -#}
{% macro org_timezone() -%}
    {%- set timezone = var('crm_timezone', 'UTC') | string | trim -%}
    {%- set timezone = timezone if timezone else 'UTC' -%}
    {%- if timezone != 'UTC' and not modules.re.match('^[A-Za-z]+(/[A-Za-z0-9_+\\-]+)+$', timezone) -%}
        {{- exceptions.raise_compiler_error(
            "CRM_TIMEZONE must be an IANA time zone name such as Asia/Kolkata or UTC (got '" ~ timezone ~ "')"
        ) -}}
    {%- endif -%}
    {{- return(timezone) -}}
{%- endmacro %}


{% macro to_org_date(timestamp_tz) -%}
    {{- return(adapter.dispatch('to_org_date', 'crm_intelligence')(timestamp_tz)) -}}
{%- endmacro %}


{#- `timestamptz AT TIME ZONE 'Zone/Name'` gives the local wall-clock time on PostgreSQL and on DuckDB (whose
    built-in ICU extension implements it), so one implementation serves both; another adapter can add its own. -#}
{% macro default__to_org_date(timestamp_tz) -%}
    cast(({{ timestamp_tz }}) at time zone '{{ org_timezone() | replace("'", "''") }}' as date)
{%- endmacro %}
