with

source as (

    {{ zoho_live_records('leads', module='Leads') }}

),

renamed as (

    select

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

    from source

)

select * from renamed
