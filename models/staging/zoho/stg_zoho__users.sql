with

source as (

    select * from {{ source('zoho', 'users') }}

),

renamed as (

    select

        ----------  ids
        cast(id as {{ dbt.type_string() }}) as user_id,
        cast(role__id as {{ dbt.type_string() }}) as role_id,

        ----------  text
        cast(full_name as {{ dbt.type_string() }}) as full_name,
        cast(first_name as {{ dbt.type_string() }}) as first_name,
        cast(last_name as {{ dbt.type_string() }}) as last_name,
        cast(email as {{ dbt.type_string() }}) as email,
        cast(status as {{ dbt.type_string() }}) as status,
        cast(role__name as {{ dbt.type_string() }}) as role_name,
        cast(profile__name as {{ dbt.type_string() }}) as profile_name,
        cast(time_zone as {{ dbt.type_string() }}) as time_zone,

        ----------  booleans
        coalesce(lower(cast(status as {{ dbt.type_string() }})) = 'active', false) as is_active,

        ----------  timestamps
        cast(created_time as {{ type_timestamptz() }}) as created_at,
        cast(modified_time as {{ type_timestamptz() }}) as modified_at

    from source

)

select * from renamed
