{#-
    The renamed, typed columns of a Zoho deal or lead, shared by the live records (stg_zoho__deals/leads) and
    by every version the extractor kept (stg_zoho__deal_versions/lead_versions), so both read alike.
-#}
{% macro zoho_deal_fields() -%}
        ----------  ids
        cast(id as {{ dbt.type_string() }}) as deal_id,
        cast(owner__id as {{ dbt.type_string() }}) as owner_id,
        cast(account_name__id as {{ dbt.type_string() }}) as account_id,
        cast(contact_name__id as {{ dbt.type_string() }}) as contact_id,
        cast(created_by__id as {{ dbt.type_string() }}) as created_by_id,
        cast(modified_by__id as {{ dbt.type_string() }}) as modified_by_id,

        ----------  text
        cast(deal_name as {{ dbt.type_string() }}) as deal_name,
        cast(owner__name as {{ dbt.type_string() }}) as owner_name,
        cast(account_name__name as {{ dbt.type_string() }}) as account_name,
        cast(contact_name__name as {{ dbt.type_string() }}) as contact_name,
        cast(pipeline as {{ dbt.type_string() }}) as pipeline,
        cast(stage as {{ dbt.type_string() }}) as stage,
        cast(lead_source as {{ dbt.type_string() }}) as lead_source,
        cast(type as {{ dbt.type_string() }}) as deal_type,
        cast(next_step as {{ dbt.type_string() }}) as next_step,
        cast(reason_for_loss__s as {{ dbt.type_string() }}) as loss_reason,
        cast(currency as {{ dbt.type_string() }}) as currency,

        ----------  numerics: Zoho's Probability is a percent, the marts use a fraction. Amount is in `currency`;
        ----------  exchange_rate is units of `currency` per one unit of the org's home currency.
        cast(amount as {{ dbt.type_numeric() }}) as amount,
        cast(exchange_rate as {{ dbt.type_numeric() }}) as exchange_rate,
        {{ divide('probability', 100) }} as probability,
        cast(expected_revenue as {{ dbt.type_numeric() }}) as expected_revenue,

        ----------  dates: Closing_Date is already a calendar date in the org timezone
        cast(closing_date as date) as closing_date,
        {{ to_org_date('cast(created_time as ' ~ type_timestamptz() ~ ')') }} as created_date,

        ----------  timestamps
        cast(created_time as {{ type_timestamptz() }}) as created_at,
        cast(modified_time as {{ type_timestamptz() }}) as modified_at
{%- endmacro %}


{% macro zoho_lead_fields() -%}
        ----------  ids
        cast(id as {{ dbt.type_string() }}) as lead_id,
        cast(owner__id as {{ dbt.type_string() }}) as owner_id,
        cast(converted_deal__id as {{ dbt.type_string() }}) as converted_deal_id,
        cast(converted_account__id as {{ dbt.type_string() }}) as converted_account_id,
        cast(converted_contact__id as {{ dbt.type_string() }}) as converted_contact_id,
        cast(created_by__id as {{ dbt.type_string() }}) as created_by_id,
        cast(modified_by__id as {{ dbt.type_string() }}) as modified_by_id,

        ----------  text
        cast(owner__name as {{ dbt.type_string() }}) as owner_name,
        cast(first_name as {{ dbt.type_string() }}) as first_name,
        cast(last_name as {{ dbt.type_string() }}) as last_name,
        cast(full_name as {{ dbt.type_string() }}) as full_name,
        cast(company as {{ dbt.type_string() }}) as company,
        cast(email as {{ dbt.type_string() }}) as email,
        cast(phone as {{ dbt.type_string() }}) as phone,
        cast(lead_source as {{ dbt.type_string() }}) as lead_source,
        cast(lead_status as {{ dbt.type_string() }}) as lead_status,
        cast(industry as {{ dbt.type_string() }}) as industry,
        cast(rating as {{ dbt.type_string() }}) as rating,
        cast(country as {{ dbt.type_string() }}) as country,
        cast(record_status__s as {{ dbt.type_string() }}) as record_status,
        cast(currency as {{ dbt.type_string() }}) as currency,

        ----------  numerics
        cast(annual_revenue as {{ dbt.type_numeric() }}) as annual_revenue,
        cast(no_of_employees as {{ dbt.type_int() }}) as employee_count,
        cast(exchange_rate as {{ dbt.type_numeric() }}) as exchange_rate,

        ----------  booleans
        coalesce(cast(converted__s as {{ dbt.type_boolean() }}), false) as is_converted,

        ----------  timestamps
        cast(created_time as {{ type_timestamptz() }}) as created_at,
        cast(converted_date_time as {{ type_timestamptz() }}) as converted_at,
        cast(modified_time as {{ type_timestamptz() }}) as modified_at,

        ----------  dates, in the org timezone
        {{ to_org_date('cast(created_time as ' ~ type_timestamptz() ~ ')') }} as created_date,
        {{ to_org_date('cast(converted_date_time as ' ~ type_timestamptz() ~ ')') }} as converted_date
{%- endmacro %}


{#- All rows of a raw Zoho table, or none (with its declared columns) while the extractor has not created it. -#}
{% macro zoho_source_or_empty(table_name) -%}
    {%- set relation = source('zoho', table_name) -%}
    {%- if execute and relation.type != 'cte' and load_relation(relation) is none -%}
    {{ zoho_empty_table(table_name) }}
    {%- else -%}
    select * from {{ relation }}
    {%- endif -%}
{%- endmacro %}
