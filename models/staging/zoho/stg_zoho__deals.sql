with

source as (

    {{ zoho_live_records('deals', module='Deals') }}

),

renamed as (

    select

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

    from source

)

select * from renamed
