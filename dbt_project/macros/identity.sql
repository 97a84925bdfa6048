{#- Folded first name with common English and German short forms mapped to their full form (Bob = Robert). -#}
{% macro canonical_first_name(key) -%}
    {%- set short_forms = {
        'bob': 'robert', 'bobby': 'robert', 'rob': 'robert', 'robbie': 'robert', 'bert': 'robert',
        'bill': 'william', 'billy': 'william', 'will': 'william', 'willy': 'william', 'liam': 'william',
        'jim': 'james', 'jimmy': 'james', 'jamie': 'james', 'mike': 'michael', 'mick': 'michael',
        'micha': 'michael', 'dave': 'david', 'davy': 'david', 'tom': 'thomas', 'tommy': 'thomas',
        'dan': 'daniel', 'danny': 'daniel', 'joe': 'joseph', 'joey': 'joseph', 'sam': 'samuel',
        'nick': 'nicholas', 'alex': 'alexander', 'sascha': 'alexander', 'ben': 'benjamin',
        'tony': 'anthony', 'toni': 'anton', 'steve': 'stephen', 'steven': 'stephen', 'matt': 'matthew',
        'andy': 'andrew', 'andi': 'andreas', 'pete': 'peter', 'tim': 'timothy', 'timo': 'timotheus',
        'ed': 'edward', 'eddie': 'edward', 'ted': 'edward', 'fred': 'frederick', 'freddie': 'frederick',
        'harry': 'henry', 'jack': 'john', 'johnny': 'john', 'jenny': 'jennifer', 'jen': 'jennifer',
        'sue': 'susan', 'susie': 'susan', 'maggie': 'margaret', 'meg': 'margaret', 'peggy': 'margaret',
        'liz': 'elizabeth', 'lizzie': 'elizabeth', 'beth': 'elizabeth', 'betty': 'elizabeth',
        'kate': 'katherine', 'katie': 'katherine', 'kathy': 'katherine', 'cathy': 'catherine',
        'patty': 'patricia', 'trish': 'patricia', 'debbie': 'deborah', 'becky': 'rebecca', 'vicky': 'victoria',
        'hans': 'johannes', 'jo': 'johannes', 'sepp': 'josef', 'jupp': 'josef', 'fritz': 'friedrich',
        'kathi': 'katharina', 'uli': 'ulrich', 'willi': 'wilhelm', 'gabi': 'gabriele', 'steffi': 'stefanie',
        'susi': 'susanne', 'moni': 'monika', 'basti': 'sebastian', 'flo': 'florian', 'max': 'maximilian',
        'klaus': 'nikolaus', 'heinz': 'heinrich', 'bernd': 'bernhard', 'rudi': 'rudolf', 'wolf': 'wolfgang',
        'manni': 'manfred', 'conny': 'cornelia', 'lotte': 'charlotte', 'lena': 'helena', 'leni': 'helena',
        'hansi': 'johannes', 'resi': 'theresa', 'franzi': 'franziska', 'jule': 'julia', 'caro': 'caroline',
        'nils': 'nikolaus', 'chris': 'christopher', 'matze': 'matthias', 'olli': 'oliver', 'frank': 'franz',
    } -%}
    case {{ key }}
        {%- for short, full in short_forms.items() %}
        when '{{ short }}' then '{{ full }}'
        {%- endfor %}
        else {{ key }}
    end
{%- endmacro %}

{#- node -> person: the resolved graph's 'self' rows, one per node (int_identity_graph_resolved's contract). -#}
{% macro node_persons(graph) -%}
    select
        left_node as node_id,
        left_person_id as person_id
    from {{ graph }}
    where match_rule = 'self'
{%- endmacro %}
