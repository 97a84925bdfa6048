-- One row per person of identity.persons: profile, activity (customer_activity), email consent, RFM and this
-- run's ML scores (segment, propensities, CLV and its tier), as of var('as_of'). Built after the ML stage
-- (the 'scored' dbt layer: every model downstream of the ml source), so the scores are this run's.

with

persons as (

    select * from {{ ref('persons') }}

),

customer_activity as (

    select * from {{ ref('customer_activity') }}

),

customer_rfm as (

    select * from {{ ref('customer_rfm') }}

),

consents as (

    select * from {{ ref('dim_consents') }}
    where purpose = 'email_marketing'

),

segments as (

    select * from {{ ref('stg_ml__customer_segments') }}

),

propensity as (

    select * from {{ ref('stg_ml__customer_propensity') }}

),

clv as (

    select * from {{ ref('stg_ml__customer_clv') }}

),

clv_tiers as (

    select * from {{ ref('clv_tiers') }}

),

clv_deciles as (

    -- deciles as ml.customer_propensity's: rank by clv ascending (ties by person_id, so reruns agree) among
    -- the persons with a CLV; 10 = highest
    select
        person_id,
        cast(
            1 + (row_number() over (order by clv asc, person_id asc) - 1) * 10 // count(*) over () as integer
        ) as clv_decile
    from clv
    where clv is not null

),

final as (

    select
        persons.person_id,
        persons.email,
        persons.phone_e164,
        persons.first_name,
        persons.last_name,
        persons.country,
        persons.is_known,
        customer_activity.first_order_date,
        customer_activity.last_order_date,
        customer_activity.orders_count,
        customer_activity.revenue,
        customer_activity.avg_order_value,
        customer_activity.preferred_channel,
        customer_activity.preferred_category,
        customer_activity.web_sessions,
        customer_activity.last_visit_at,
        customer_activity.email_open_rate,
        customer_activity.email_click_rate,
        coalesce(consents.is_granted, false) as has_email_consent,
        customer_rfm.recency_days,
        customer_rfm.frequency,
        customer_rfm.monetary,
        customer_rfm.r_score,
        customer_rfm.f_score,
        customer_rfm.m_score,
        customer_rfm.rfm_segment,
        customer_activity.orders_30d,
        customer_activity.orders_90d,
        customer_activity.orders_365d,
        customer_activity.revenue_30d,
        customer_activity.revenue_90d,
        customer_activity.revenue_365d,
        customer_activity.web_sessions_30d,
        customer_activity.web_sessions_90d,
        customer_activity.web_sessions_365d,
        customer_activity.email_clicks_30d,
        customer_activity.email_clicks_90d,
        customer_activity.email_clicks_365d,
        consents.consent_state as email_consent_state,
        consents.source as email_consent_source,
        consents.updated_at as email_consent_updated_at,
        segments.segment_id,
        segments.segment_name,
        propensity.purchase_30d_probability,
        propensity.purchase_30d_decile,
        propensity.churn_90d_probability,
        propensity.churn_90d_decile,
        clv.clv,
        clv_deciles.clv_decile,
        clv_tiers.clv_tier,
        clv.probability_alive,
        cast('{{ as_of() }}' as date) as as_of
    from persons
    left join customer_activity
        on persons.person_id = customer_activity.person_id
    left join customer_rfm
        on persons.person_id = customer_rfm.person_id
    left join consents
        on persons.person_id = consents.person_id
    left join segments
        on persons.person_id = segments.person_id
    left join propensity
        on persons.person_id = propensity.person_id
    left join clv
        on persons.person_id = clv.person_id
    left join clv_deciles
        on persons.person_id = clv_deciles.person_id
    left join clv_tiers
        on clv_deciles.clv_decile = clv_tiers.clv_decile

)

select * from final
