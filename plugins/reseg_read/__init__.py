"""reseg's built-in READ head plugin (spec seg_token_family.md §2): LISA's ``[SEG]`` pipeline plus
similarity-as-points (SasP) prompts made differentiable by discrete-to-continuous (DtoC) sampling."""
