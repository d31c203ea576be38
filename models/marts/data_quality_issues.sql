{#- The sanity rules: (has_* flag of int_deals_in_home_currency, rule, field, how the marts treat it). -#}
{%- set deal_rules = [
    ('has_negative_amount', 'negative_amount', 'Amount', 'amount left out of every sum'),
    ('has_unusable_exchange_rate', 'no_usable_exchange_rate', 'Exchange_Rate', 'amount left out of every sum'),
    ('has_probability_out_of_range', 'probability_outside_0_to_100', 'Probability',
        'weighted amount left out of every sum'),
    ('has_closing_date_before_creation', 'closing_date_before_creation', 'Closing_Date',
        'not used as the close day'),
    ('has_implausible_closing_date', 'closing_date_implausible', 'Closing_Date', 'not used as the close day'),
    ('has_stage_in_no_pipeline', 'stage_in_no_pipeline', 'Stage', 'counted as open'),
    ('has_owner_not_a_user', 'owner_not_a_user', 'Owner', 'listed only'),
] -%}

with

deals as (

    select * from {{ ref('int_deals_in_home_currency') }}

),

-- The live leads, as the leads mart keeps them (the staging view would check two million leads against the
-- deletion log again).
leads as (

    select * from {{ ref('leads') }}

),

users as (

    select * from {{ ref('stg_zoho__users') }}

),

deal_issues as (

    {% for flag, rule, field, treatment in deal_rules %}
    select
        cast('Deals' as {{ dbt.type_string() }}) as module,
        deal_id as record_id,
        deal_name as record_name,
        owner_id,
        cast('{{ rule }}' as {{ dbt.type_string() }}) as rule,
        cast('{{ field }}' as {{ dbt.type_string() }}) as field_name,
        cast(
            {%- if field == 'Amount' %} amount_in_currency
            {%- elif field == 'Exchange_Rate' %} exchange_rate
            {%- elif field == 'Probability' %} probability_in_crm * 100
            {%- elif field == 'Closing_Date' %} closing_date
            {%- elif field == 'Stage' %} stage
            {%- else %} owner_id
            {%- endif %} as {{ dbt.type_string() }}
        ) as field_value,
        cast('{{ treatment }}' as {{ dbt.type_string() }}) as treatment

    from deals
    where {{ flag }}
    {% if not loop.last %}
    union all
    {% endif %}
    {%- endfor %}

),

lead_issues as (

    select
        cast('Leads' as {{ dbt.type_string() }}) as module,
        lead_id as record_id,
        full_name as record_name,
        owner_id,
        cast('owner_not_a_user' as {{ dbt.type_string() }}) as rule,
        cast('Owner' as {{ dbt.type_string() }}) as field_name,
        owner_id as field_value,
        cast('listed only' as {{ dbt.type_string() }}) as treatment

    from leads
    where owner_id is not null
        and not exists (
            select 1
            from users
            where users.user_id = leads.owner_id
        )

),

unioned as (

    select * from deal_issues
    union all
    select * from lead_issues

),

final as (

    select
        {{ dbt.concat(['module', "'-'", 'record_id', "'-'", 'rule']) }} as issue_id,
        module,
        record_id,
        record_name,
        owner_id,
        rule,
        field_name,
        field_value,
        treatment

    from unioned

)

select * from final
